"""One web-config.yml, two servers: the watchdog and a real node_exporter (Debian's
prometheus-node-exporter, exporter-toolkit inside) answer every client alike.

docs/exporter.md tells operators to reuse the file they give node_exporter's
--web.config.file; this holds the claim against the real thing. The hashes are
made by the docs' recipe (`htpasswd -nBC 10`, apache2-utils) where installed.
Both listen on 127.0.0.1 only; node_exporter runs with its collectors off.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess

import pytest
import requests
import yaml

from qbt_vpn_watchdog.http_server import HttpServer
from qbt_vpn_watchdog.metrics import Exposition
from tests.core.test_metrics_collector import full_snapshot
from tests.core.test_web_config import PASSWORD, htpasswd_hash, security
from tests.support.monitoring import free_port
from tests.support.procs import wait_for
from tests.support.tls_files import self_signed

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
pytestmark = [
    pytest.mark.skipif(not NODE_EXPORTER, reason="prometheus-node-exporter not installed"),
    pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed"),
]


def _write(tmp_path, doc: dict) -> str:
    path = tmp_path / "web-config.yml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _tls_doc(tmp_path, **server) -> dict:
    cert, key = self_signed(tmp_path)
    return {
        "tls_server_config": {"cert_file": str(cert), "key_file": str(key), **server},
        "basic_auth_users": {
            "prometheus": htpasswd_hash(PASSWORD),
            "alice": htpasswd_hash("alice's own"),
        },
    }


class Pair:
    """The watchdog's server and a node_exporter, both from the same web-config.yml."""

    def __init__(self, path: str) -> None:
        snap = full_snapshot()
        self.ours = HttpServer(
            Exposition(lambda: snap).render, lambda: (200, "alive"), security(path)
        )
        self.ours.start(("127.0.0.1", 0))
        self.ne_port = free_port()
        self.ne = subprocess.Popen(
            [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{self.ne_port}",
             f"--web.config.file={path}", "--collector.disable-defaults",
             "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_for("node_exporter listening", self._ne_listening, 20, diag=self._ne_log)

    def _ne_listening(self) -> bool:
        if self.ne.poll() is not None:
            raise AssertionError(f"node_exporter exited {self.ne.returncode}: {self._ne_log()}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.ne_port)) == 0

    def _ne_log(self) -> str:
        return "" if self.ne.poll() is None else self.ne.stderr.read().decode(errors="replace")

    def urls(self, scheme: str = "https") -> dict[str, str]:
        return {
            "watchdog": f"{scheme}://127.0.0.1:{self.ours.address[1]}/metrics",
            "node_exporter": f"{scheme}://127.0.0.1:{self.ne_port}/metrics",
        }

    def close(self) -> None:
        self.ours.stop()
        self.ne.terminate()
        try:
            self.ne.wait(10)
        except subprocess.TimeoutExpired:
            self.ne.kill()
            self.ne.wait()


@pytest.fixture
def pair_of(tmp_path):
    made = []

    def make(doc: dict) -> Pair:
        p = Pair(_write(tmp_path, doc))
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def _session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # loopback only
    return s


def _status(url: str, ca, **kw) -> int | str:
    """The status code, or the kind of failure a client sees."""
    try:
        with _session() as s:
            return s.get(url, verify=str(ca), timeout=5, **kw).status_code
    except requests.exceptions.SSLError:
        return "tls refused"
    except requests.ConnectionError:
        return "connection refused"


# Each request a client can make with credentials; good ones in between, so no client
# is ever three wrong in a row (the watchdog then answers 429, node_exporter never does).
CREDENTIALS = [
    ("the right password", {"auth": ("prometheus", PASSWORD)}),
    ("a wrong password", {"auth": ("prometheus", "nope")}),
    ("another user's password", {"auth": ("alice", PASSWORD)}),
    ("the second user", {"auth": ("alice", "alice's own")}),
    ("an unknown user", {"auth": ("mallory", PASSWORD)}),
    ("the right password again", {"auth": ("prometheus", PASSWORD)}),
    ("no credentials", {}),
    ("a case-changed user name", {"auth": ("Prometheus", PASSWORD)}),
    ("a password with its last character cut", {"auth": ("prometheus", PASSWORD[:-1])}),
    ("not basic auth", {"headers": {"Authorization": "Bearer abc"}}),
    ("basic with a broken base64", {"headers": {"Authorization": "Basic !!!"}}),
]


def test_tls_and_bcrypt_users_answer_every_client_as_node_exporter_does(pair_of, tmp_path):
    doc = _tls_doc(tmp_path)
    pair = pair_of(doc)
    cert = doc["tls_server_config"]["cert_file"]
    urls = pair.urls()
    rows = []
    for what, kw in CREDENTIALS:
        got = {name: _status(url, cert, **kw) for name, url in urls.items()}
        rows.append((what, got["node_exporter"], got["watchdog"]))
    print("\n".join(f"{w:45} node_exporter {a!s:5} watchdog {b}" for w, a, b in rows))
    assert [r[1] for r in rows] == [r[2] for r in rows], rows
    # The matrix means something: both let the right users in and keep the rest out.
    assert {r[1] for r in rows} == {200, 401}


def test_plain_http_to_the_tls_port_gets_the_same_400_from_both(pair_of, tmp_path):
    # A scrape job left at `scheme: http`: Go's answer (node_exporter's), so Prometheus
    # shows the same "400 Bad Request" for both, never a connection reset.
    doc = _tls_doc(tmp_path)
    pair = pair_of(doc)
    got = {}
    for name, url in pair.urls("http").items():
        with _session() as s:
            r = s.get(url, auth=("prometheus", PASSWORD), timeout=5)
        got[name] = (r.status_code, r.text)
    assert got["watchdog"] == got["node_exporter"], got
    assert got["watchdog"] == (400, "Client sent an HTTP request to an HTTPS server.\n")
    # The TLS port still serves TLS after it (nothing was left half-open).
    cert = doc["tls_server_config"]["cert_file"]
    assert _status(pair.urls()["watchdog"], cert, auth=("prometheus", PASSWORD)) == 200
    assert pair.ours.stats.dropped["tls"] == 1


def test_a_tls_version_floor_is_kept_by_both(pair_of, tmp_path):
    doc = _tls_doc(tmp_path, min_version="TLS13")
    pair = pair_of(doc)
    cert = doc["tls_server_config"]["cert_file"]
    for name, url in pair.urls().items():
        port = int(url.split(":")[2].split("/")[0])
        for version, accepted in ((ssl.TLSVersion.TLSv1_2, False), (ssl.TLSVersion.TLSv1_3, True)):
            ctx = ssl.create_default_context(cafile=cert)
            ctx.minimum_version = ctx.maximum_version = version
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                        got = tls.version()
            except (ssl.SSLError, ConnectionResetError):
                got = None
            assert (got is not None) == accepted, f"{name} with {version.name}: {got}"


def test_client_certificates_are_required_by_both(pair_of, tmp_path):
    client_cert, client_key = self_signed(tmp_path, "client")
    doc = _tls_doc(
        tmp_path, client_ca_file=str(client_cert), client_auth_type="RequireAndVerifyClientCert"
    )
    del doc["basic_auth_users"]
    pair = pair_of(doc)
    cert = doc["tls_server_config"]["cert_file"]
    for name, url in pair.urls().items():
        assert _status(url, cert, cert=(str(client_cert), str(client_key))) == 200, name
        assert _status(url, cert) in ("tls refused", "connection refused"), name
