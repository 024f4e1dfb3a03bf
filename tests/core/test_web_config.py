"""exporter-toolkit's web-config.yml, the auth gate (cache, throttle, counts, log), with real
clients: requests, curl and Prometheus with tls_config + basic_auth.

The files are the ones a node_exporter takes: the layout of exporter-toolkit's own
docs/web-config.yml, a $2y$ bcrypt hash as `htpasswd -nBC 10` prints it (htpasswd
when installed, else Python's bcrypt with htpasswd's $2y$ prefix).
"""

from __future__ import annotations

import base64
import logging
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse

import bcrypt
import pytest
import requests
import yaml

from qbt_vpn_watchdog import config
from qbt_vpn_watchdog.config import ConfigError
from qbt_vpn_watchdog.http_server import HttpServer
from qbt_vpn_watchdog.metrics import Exposition
from qbt_vpn_watchdog.web_security import (
    BACKOFF_FIRST,
    FREE_GUESSES,
    LOG_EVERY,
    Gate,
    load_web_security,
    with_config_file,
)
from tests.core.test_metrics_collector import full_snapshot
from tests.support.monitoring import prometheus_with_basic_auth
from tests.support.procs import wait_for
from tests.support.tls_files import self_signed

needs_openssl = pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
PASSWORD = "correct horse battery staple"


def htpasswd_hash(password: str, cost: int = 10) -> str:
    """What `htpasswd -nBC 10 "" | tr -d ':\\n'` prints for this password."""
    if shutil.which("htpasswd"):
        out = subprocess.run(["htpasswd", "-nbBC", str(cost), "", password],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return out.strip().lstrip(":")
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode().replace("$2b$", "$2y$")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def web_config(tmp_path, tls: bool = True, **extra) -> str:
    doc: dict = {"basic_auth_users": {"prometheus": htpasswd_hash(PASSWORD),
                                      "alice": htpasswd_hash("alice's own")}}  # fmt: skip
    if tls:
        cert, key = self_signed(tmp_path)
        doc["tls_server_config"] = {"cert_file": str(cert), "key_file": str(key)}
    doc.update(extra)
    path = tmp_path / "web-config.yml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def security(path: str):
    return load_web_security(config.parse(f'[web]\nconfig_file = "{path}"\n').web)


# --- the file ------------------------------------------------------------------------


def test_exporter_toolkits_sample_layout_loads(tmp_path):
    sec = security(web_config(tmp_path, tls=False))
    assert sec.scheme == "http" and set(sec.users) == {"prometheus", "alice"}
    assert sec.authorized(basic("prometheus", PASSWORD))
    assert sec.authorized(basic("alice", "alice's own"))
    for header in (basic("prometheus", "alice's own"), basic("bob", PASSWORD), None):
        assert not sec.authorized(header)
    assert "$2y$" not in repr(sec)


@needs_openssl
def test_every_mistake_in_the_file_is_named_at_once(tmp_path):
    cert, key = self_signed(tmp_path)
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": str(cert), "key_file": str(tmp_path / "nokey"),
                              "client_auth_type": "RequireAndVerifyClientCert",
                              "cipher_suites": ["TLS_AES_128_GCM_SHA256"], "min_version": "TLS09"},
        "basic_auth_users": {"prometheus": "plaintext-oops"},
        "rate_limit": {"interval": "1s", "burst": 20},
        "tsl_server_config": {},
    }))  # fmt: skip
    with pytest.raises(ConfigError) as e:
        security(str(path))
    text = "\n".join(e.value.errors)
    for part in ("tsl_server_config: unknown key", "rate_limit: not supported",
                 f"key_file: no such file: {tmp_path / 'nokey'}", "client_ca_file: needed for",
                 "cipher_suites is not supported", "min_version: 'TLS09'",
                 "basic_auth_users.prometheus: not a bcrypt hash"):  # fmt: skip
        assert part in text, part
    assert "plaintext-oops" not in text  # never the value: it may be a password


def test_missing_file_and_not_yaml_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="web.config_file: no such file"):
        security(str(tmp_path / "none.yml"))
    (tmp_path / "x.yml").write_text("basic_auth_users: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        security(str(tmp_path / "x.yml"))


def test_the_web_section_keys_and_the_file_are_one_or_the_other(tmp_path):
    with pytest.raises(ConfigError, match="web.tls_cert_file: not used when web.config_file"):
        config.parse('[web]\nconfig_file = "/w.yml"\ntls_cert_file = "/c"\ntls_key_file = "/k"\n')
    cfg = config.parse('[web]\nbasic_auth_username = "p"\nbasic_auth_password_file = "/pw"\n')
    with pytest.raises(ConfigError, match="with --web.config.file, put TLS and users in that file"):
        with_config_file(cfg, "/w.yml")
    assert with_config_file(config.Config(), "/w.yml").web.config_file == "/w.yml"


# --- the gate ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def run(gate: Gate, header: str | None, client: str = "192.0.2.1"):
    verdict, extra = gate.decide(header, client)
    if verdict == "check":
        ok = gate.security.verify(extra.user, extra.password)
        verdict = "ok" if gate.settle(extra, ok) else "refused"
    return verdict


def test_the_gate_caches_good_credentials_and_throttles_a_guesser(tmp_path, caplog):
    clock = Clock()
    gate = Gate(security(web_config(tmp_path, tls=False)), clock=clock)
    good = basic("prometheus", PASSWORD)
    assert gate.decide(good, "192.0.2.9")[0] == "check"  # the first time: one bcrypt check
    gate._waiting = 0  # noqa: SLF001 - that check was not run
    gate._clients.clear()  # noqa: SLF001
    assert run(gate, good, "192.0.2.9") == "ok"
    assert gate.decide(good, "192.0.2.9") == ("ok", None)  # cached: no check
    caplog.set_level(logging.WARNING)
    verdicts = [run(gate, basic("prometheus", f"guess{i}")) for i in range(FREE_GUESSES + 2)]
    assert verdicts == ["refused"] * FREE_GUESSES + ["throttled"] * 2
    assert gate.decide(good, "192.0.2.9") == ("ok", None)  # the scraper is not held up
    # The same wrong password again is answered from the cache, not checked again.
    assert gate.decide(basic("prometheus", "guess0"), "192.0.2.1") == ("refused", None)
    clock.t += BACKOFF_FIRST + 0.01
    assert run(gate, basic("prometheus", "guess-late")) == "refused"  # checked again...
    assert gate.decide(basic("prometheus", "again"), "192.0.2.1")[0] == "throttled"  # ...2 s
    assert gate.counters.failures == {"wrong": FREE_GUESSES + 2, "throttled": 3}
    # One log line for the first failure; the rest wait for the next minute.
    lines = [r.getMessage() for r in caplog.records if "192.0.2.1" in r.getMessage()]
    assert len(lines) == 1 and "guess" not in lines[0] and PASSWORD not in caplog.text
    clock.t += LOG_EVERY
    run(gate, None)
    lines = [r.getMessage() for r in caplog.records if "192.0.2.1" in r.getMessage()]
    assert len(lines) == 2 and "1 missing" in lines[1] and "throttled" in lines[1]


def test_a_stale_job_does_not_block_another_jobs_first_login_from_the_same_host(tmp_path):
    gate = Gate(security(web_config(tmp_path, tls=False)), clock=Clock())
    for _ in range(10):  # the stale job's scrapes: one check, then the cache
        assert run(gate, basic("prometheus", "last year's password"), "127.0.0.1") == "refused"
    assert run(gate, basic("prometheus", PASSWORD), "127.0.0.1") == "ok"


def test_a_basic_token_that_is_not_ascii_is_no_credentials_and_the_server_goes_on(tmp_path):
    # Headers arrive as latin-1: b64decode raised a plain ValueError on "\xff", which
    # escaped the gate and ended the server loop (every later scrape refused).
    server = HttpServer(Exposition(lambda: full_snapshot()).render, lambda: (200, "alive"),
                        security(web_config(tmp_path, tls=False)))  # fmt: skip
    server.start(("127.0.0.1", 0))
    try:
        for token in (b"\xff", b"\xc3\xa9t\xc3\xa9", b"YWJj\xff"):
            c = socket.create_connection(("127.0.0.1", server.address[1]), timeout=5)
            c.sendall(b"GET /metrics HTTP/1.1\r\nAuthorization: Basic " + token + b"\r\n\r\n")
            assert c.recv(100).startswith(b"HTTP/1.1 401"), token
            c.close()
        with _session() as s:
            url = f"http://127.0.0.1:{server.address[1]}/metrics"
            assert s.get(url, auth=("prometheus", PASSWORD), timeout=5).status_code == 200
    finally:
        server.stop()


# --- real clients --------------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    path = web_config(tmp_path)
    snap = full_snapshot()
    server = HttpServer(Exposition(lambda: snap).render, lambda: (200, "alive"), security(path))
    server.start(("127.0.0.1", 0))
    yield server, tmp_path / "selfsigned.crt", tmp_path
    server.stop()


def _session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # loopback only
    return s


@needs_openssl
def test_requests_and_curl_with_a_bcrypt_user_over_tls(served):
    server, _, tmp_path = served
    cert = next(tmp_path.glob("*.crt"))
    url = f"https://127.0.0.1:{server.address[1]}/metrics"
    with _session() as s:
        assert s.get(url, auth=("prometheus", PASSWORD), verify=str(cert), timeout=5).ok
        r = s.get(url, auth=("prometheus", "nope"), verify=str(cert), timeout=5)
        assert r.status_code == 401 and "qbtvpn_" not in r.text
    if shutil.which("curl"):
        out = subprocess.run(
            ["curl", "-sS", "--noproxy", "*", "--cacert", str(cert), "-u", "alice:alice's own",
             "-o", "/dev/null", "-w", "%{http_code}", url],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.stdout == "200", out.stderr
    assert server.stats.auth.failures["wrong"] == 1


@needs_openssl
@pytest.mark.skipif(not shutil.which("prometheus"), reason="prometheus not installed")
def test_prometheus_scrapes_with_tls_config_and_basic_auth_from_a_web_config(served):
    server, _, tmp_path = served
    cert = next(tmp_path.glob("*.crt"))
    target = f"127.0.0.1:{server.address[1]}"
    good, stale = tmp_path / "pw", tmp_path / "stale"
    good.write_text(PASSWORD)
    stale.write_text("last year's password")

    jobs = {"watchdog": good, "stale": stale}
    with prometheus_with_basic_auth(tmp_path, target, cert, jobs) as (targets, api, proc):
        got = wait_for("both scraped, the good job up",
                       lambda: (t := targets()) and len(t) == 2
                       and t["watchdog"]["health"] == "up" and t, 30, diag=proc.tail)  # fmt: skip
        assert got["stale"]["health"] == "down" and "401" in got["stale"]["lastError"]
        with _session() as s:
            q = urllib.parse.urlencode({"query": 'qbtvpn_build_info{job="watchdog"}'})
            r = wait_for("a series", lambda: s.get(f"{api}/query?{q}", timeout=2)
                         .json()["data"]["result"], 15)  # fmt: skip
        assert r[0]["metric"]["revision"]
        time.sleep(2)  # a few more scrapes of both jobs
        # The stale job's password was checked once; its scrapes since are refused from
        # the cache (each counted), and never throttle the good job.
        assert server.stats.auth.failures["wrong"] >= 2
        assert server.stats.auth.failures["throttled"] == 0


@needs_openssl
def test_client_certificates_required_and_verified(tmp_path):
    cert, key = self_signed(tmp_path)
    client_cert, client_key = self_signed(tmp_path, "client")  # its own CA
    other_cert, other_key = self_signed(tmp_path, "other")
    path = tmp_path / "web-config.yml"
    path.write_text(yaml.safe_dump({"tls_server_config": {
        "cert_file": str(cert), "key_file": str(key), "client_ca_file": str(client_cert),
        "client_auth_type": "RequireAndVerifyClientCert"}}))  # fmt: skip
    snap = full_snapshot()
    server = HttpServer(Exposition(lambda: snap).render, lambda: (200, "alive"),
                        security(str(path)))  # fmt: skip
    server.start(("127.0.0.1", 0))
    url = f"https://127.0.0.1:{server.address[1]}/healthz"
    try:
        with _session() as s:
            r = s.get(url, verify=str(cert), cert=(str(client_cert), str(client_key)), timeout=5)
            assert r.status_code == 200
            for wrong in (None, (str(other_cert), str(other_key))):
                with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
                    s.get(url, verify=str(cert), cert=wrong, timeout=5)
        assert server.stats.dropped["tls"] >= 1
    finally:
        server.stop()


def test_without_the_web_extra_a_web_config_file_is_a_clear_config_error(tmp_path):
    path = web_config(tmp_path, tls=False)
    code = (
        "import sys; sys.modules['bcrypt'] = None\n"  # as if the extra were not installed
        "from qbt_vpn_watchdog import config\n"
        "from qbt_vpn_watchdog.web_security import load_web_security\n"
        f"load_web_security(config.parse('[web]\\nconfig_file = \"{path}\"\\n').web)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "needs the optional packages PyYAML and bcrypt (bcrypt is missing)" in r.stderr
    assert "pip install 'qbt-vpn-watchdog[web]'" in r.stderr
