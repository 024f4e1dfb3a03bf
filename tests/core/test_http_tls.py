"""/metrics over HTTPS with basic auth, with real clients: requests, curl, and Prometheus itself.

The server is the daemon's (qbt_vpn_watchdog.http_server) with the security the [web]
config section gives (qbt_vpn_watchdog.web_security), on a loopback port. The
certificate is a throwaway one made by openssl for 127.0.0.1.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import urllib.parse

import pytest
import requests

from qbt_vpn_watchdog import config
from qbt_vpn_watchdog.http_server import HttpServer
from qbt_vpn_watchdog.metrics import Exposition
from qbt_vpn_watchdog.web_security import WebSecurity, load_web_security
from tests.core.test_metrics_collector import full_snapshot
from tests.support.monitoring import prometheus_with_basic_auth
from tests.support.procs import wait_for
from tests.support.tls_files import self_signed

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")

PASSWORD = "correct horse battery staple"


@pytest.fixture
def tls(tmp_path):
    cert, key = self_signed(tmp_path)
    pw = tmp_path / "web-password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    cfg = config.parse(
        f'[web]\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'
        f'basic_auth_username = "prometheus"\nbasic_auth_password_file = "{pw}"\n'
    )
    snapshot = full_snapshot()
    server = HttpServer(
        Exposition(lambda: snapshot).render,
        lambda: (200, "alive; ok: 6/6 checks passed"),
        load_web_security(cfg.web),
    )
    server.start(("127.0.0.1", 0))
    try:
        yield server, cert, pw
    finally:
        server.stop()


def _session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # loopback only: no proxy from the environment
    return s


def test_https_with_the_right_credentials_and_only_with_them(tls):
    server, cert, _ = tls
    url = f"https://127.0.0.1:{server.address[1]}"
    with _session() as s:
        r = s.get(f"{url}/metrics", auth=("prometheus", PASSWORD), verify=str(cert), timeout=5)
        assert r.status_code == 200 and "qbtvpn_build_info" in r.text
        for path in ("/metrics", "/healthz", "/"):
            r = s.get(url + path, verify=str(cert), timeout=5)
            assert r.status_code == 401, path
            assert r.headers["WWW-Authenticate"].startswith('Basic realm="qbt-vpn-watchdog"')
            assert "qbtvpn_" not in r.text
        r = s.get(f"{url}/metrics", auth=("prometheus", "wrong"), verify=str(cert), timeout=5)
        assert r.status_code == 401
        r = s.head(f"{url}/healthz", auth=("prometheus", PASSWORD), verify=str(cert), timeout=5)
        assert r.status_code == 200


def test_plain_http_and_a_too_old_tls_are_refused_and_the_server_goes_on(tls, tmp_path):
    server, cert, pw = tls
    port = server.address[1]
    with _session() as s:
        # Plain HTTP gets Go's 400 (node_exporter's, see test_web_config_node_exporter.py),
        # and nothing of the metrics.
        r = s.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert (r.status_code, r.text) == (400, "Client sent an HTTP request to an HTTPS server.\n")
    key = cert.with_suffix(".key")
    server.security = load_web_security(
        config.parse(
            f'[web]\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"\ntls_min_version = "TLS1.3"\n'
            f'basic_auth_username = "prometheus"\nbasic_auth_password_file = "{pw}"\n'
        ).web
    )
    # A client that connects and never starts the handshake holds only its own thread.
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        with _session() as s:
            r = s.get(
                f"https://127.0.0.1:{port}/healthz",
                auth=("prometheus", PASSWORD),
                verify=str(cert),
                timeout=5,
            )
            assert r.status_code == 200
    finally:
        idle.close()


@pytest.mark.skipif(not shutil.which("curl"), reason="curl not installed")
def test_curl_verifies_the_certificate_and_sends_the_password(tls):
    server, cert, _ = tls
    url = f"https://127.0.0.1:{server.address[1]}/metrics"
    ok = subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "--cacert", str(cert), "-u", f"prometheus:{PASSWORD}",
         "-o", "/dev/null", "-w", "%{http_code}", url],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert ok.stdout == "200", ok.stderr
    unverified = subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "-u", f"prometheus:{PASSWORD}", url],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert unverified.returncode == 60  # curl: the peer's certificate cannot be verified


def test_a_reload_switches_tls_and_auth_on_for_the_next_connection(tls):
    server, cert, _ = tls
    port = server.address[1]
    tls_security = server.security
    server.security = WebSecurity()  # as a reload to the default [web] would
    with _session() as s:
        assert s.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    server.security = tls_security
    with _session() as s:
        r = s.get(f"https://127.0.0.1:{port}/healthz", verify=str(cert), timeout=5)
        assert r.status_code == 401


@pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus not installed")
def test_prometheus_scrapes_it_with_tls_config_and_basic_auth(tls, tmp_path):
    server, cert, pw = tls
    target = f"127.0.0.1:{server.address[1]}"
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not it\n")

    jobs = {"watchdog": pw, "wrong-password": wrong}
    with prometheus_with_basic_auth(tmp_path, target, cert, jobs) as (targets, api, proc):
        got = wait_for("both targets scraped", lambda: len(targets()) == 2 and targets(), 30,
                       diag=proc.tail)  # fmt: skip
        assert got["watchdog"]["health"] == "up", got["watchdog"]["lastError"]
        assert got["wrong-password"]["health"] == "down"
        assert "401" in got["wrong-password"]["lastError"]
        with _session() as s:
            q = urllib.parse.urlencode({"query": 'qbtvpn_build_info{job="watchdog"}'})
            r = wait_for(
                "a scraped series",
                lambda: s.get(f"{api}/query?{q}", timeout=2).json()["data"]["result"],
                15,
            )
        assert r[0]["metric"]["job"] == "watchdog"


def test_a_reload_that_turns_tls_off_serves_a_waiting_connection_in_plain_http(tls):
    server, cert, pw = tls
    c = socket.create_connection(("127.0.0.1", server.address[1]), timeout=5)
    try:
        wait_for("the connection accepted", lambda: server.stats.open == 1, 5)
        server.security = load_web_security(config.parse("[web]\n").web)  # TLS and auth off
        c.sendall(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert c.recv(100).startswith(b"HTTP/1.1 200 OK")
    finally:
        c.close()
    assert server.stats.dropped["tls"] == 0
