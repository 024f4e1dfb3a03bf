"""Http: GETs from inside a namespace against real loopback servers there (HTTP and HTTPS)."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import time

import pytest

from qbt_vpn_watchdog.sources import SourceError
from qbt_vpn_watchdog.sources.dns import Resolver
from qbt_vpn_watchdog.sources.http import Http
from qbt_vpn_watchdog.sources.netns import socket_in
from tests.support.dripper import HEADERS_DRIP, TLS_DRIP, Dripper
from tests.support.netns_helpers import dnsmasq, http_server, netns, self_signed_cert
from tests.support.session_names import unique

pytestmark = pytest.mark.root

NS = unique("qvp-http")
CAP = 64 * 1024
JSON_BODY = json.dumps({"ip": "10.99.0.7", "airvpn": True, "result": "ok"}).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked needs 1.1

    def log_message(self, *a):  # keep test output quiet
        pass

    def _send(self, status, ctype, body, length=True):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _chunked(self, parts):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for p in parts:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(p), p))
        self.wfile.write(b"0\r\n\r\n")

    def do_GET(self):  # noqa: N802 - http.server's name
        p = self.path
        if p == "/json":
            self.server.seen_host = self.headers.get("Host")
            self._send(200, "application/json", JSON_BODY)
        elif p == "/html":
            self._send(200, "text/html", b"<html><body>Please log in</body></html>")
        elif p == "/big":
            self._send(200, "application/json", b"x" * (CAP + 1))
        elif p == "/big-no-length":
            self._send(200, "application/json", b"x" * (CAP * 3), length=False)
            self.close_connection = True
        elif p == "/exact":
            self._send(200, "application/octet-stream", b"y" * CAP)
        elif p == "/chunked":
            self._chunked([JSON_BODY[:10], JSON_BODY[10:]])
        elif p == "/big-chunked":
            self._chunked([b"z" * 30000] * 3)
        elif p == "/slow":
            time.sleep(1.5)
            self._send(200, "application/json", JSON_BODY)
        elif p == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"d")
                self.wfile.flush()
                time.sleep(0.05)
        elif p == "/not-http":
            self.wfile.write(b"SSH-2.0-OpenSSH_9.2\r\n")
            self.close_connection = True
        else:
            self._send(404, "text/plain", b"no")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = self_signed_cert(d, "exit.test", "127.0.0.1")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    with netns(NS) as ns:
        with (
            dnsmasq(
                ns,
                "127.0.0.1",
                53,
                "--address=/exit.test/127.0.0.1",
                "--address=/wrong.test/127.0.0.1",
                "--address=/nx.test/",
            ),
            http_server(ns, "127.0.0.1", 80, Handler) as plain,
            http_server(ns, "127.0.0.1", 443, Handler, tls=server_tls),
        ):
            yield {"ns": ns, "cafile": cert, "plain": plain}


def _http(env, nameserver="127.0.0.1", **kw):
    return Http(env["ns"], Resolver(env["ns"]), nameserver, **kw)


def _err(env, url, timeout=2.0, **kw) -> SourceError:
    with pytest.raises(SourceError) as ei:
        _http(env, **kw).get(url, timeout, CAP)
    return ei.value


def test_json_by_name_resolved_through_the_namespace_resolver(env):
    # exit.test exists only in the namespace's dnsmasq: the host's resolver
    # could not have answered it.
    r = _http(env).get("http://exit.test/json", 2.0, CAP)
    assert r.status == 200
    assert r.headers["content-type"] == "application/json"
    assert json.loads(r.body)["ip"] == "10.99.0.7"
    assert env["plain"].seen_host == "exit.test"
    assert 0 < r.latency < 1


def test_ip_literal_needs_no_resolver(env):
    r = Http(env["ns"], Resolver(env["ns"]), None).get("http://127.0.0.1/json", 2.0, CAP)
    assert r.status == 200 and r.body == JSON_BODY


def test_html_is_returned_as_is(env):
    r = _http(env).get("http://exit.test/html", 2.0, CAP)
    assert r.headers["content-type"] == "text/html" and b"log in" in r.body


def test_not_found_status_is_returned(env):
    assert _http(env).get("http://exit.test/nothing", 2.0, CAP).status == 404


def test_chunked(env):
    r = _http(env).get("http://exit.test/chunked", 2.0, CAP)
    assert r.body == JSON_BODY


def test_body_exactly_at_the_cap_is_fine(env):
    assert len(_http(env).get("http://exit.test/exact", 2.0, CAP).body) == CAP


@pytest.mark.parametrize("path", ["/big", "/big-no-length", "/big-chunked"])
def test_oversize_body(env, path):
    e = _err(env, f"http://exit.test{path}")
    assert e.kind == "bad_response"
    assert f"response larger than {CAP} bytes" in str(e)


def test_slow_server_times_out(env):
    t0 = time.monotonic()
    e = _err(env, "http://exit.test/slow", timeout=0.4)
    assert e.kind == "timeout"
    assert time.monotonic() - t0 < 1.0


def test_dripping_body_is_bounded_by_the_whole_timeout(env):
    # Each recv is quick, the whole body takes 5 s: the deadline is overall.
    t0 = time.monotonic()
    e = _err(env, "http://exit.test/drip", timeout=0.5)
    assert e.kind == "timeout"
    assert time.monotonic() - t0 < 1.2


def test_refused(env):
    e = _err(env, "http://exit.test:81/json")
    assert e.kind == "unreachable" and "refused" in str(e)


def test_not_http(env):
    e = _err(env, "http://exit.test/not-http")
    assert e.kind == "bad_response"


def test_name_errors(env):
    e = _err(env, "http://host.nx.test/json")
    assert e.kind == "unreachable" and "NXDOMAIN" in str(e)
    e = _err(env, "http://exit.test/json", nameserver=None)
    assert e.kind == "unreachable" and "no nameserver" in str(e)


def test_https_with_the_test_ca(env):
    ctx = ssl.create_default_context(cafile=env["cafile"])
    r = _http(env, ssl_context=ctx).get("https://exit.test/json", 2.0, CAP)
    assert r.status == 200 and r.body == JSON_BODY


def test_https_self_signed_is_rejected_by_default(env):
    e = _err(env, "https://exit.test/json")
    assert e.kind == "tls" and "certificate" in str(e)


def test_https_name_mismatch_is_rejected(env):
    ctx = ssl.create_default_context(cafile=env["cafile"])
    e = _err(env, "https://wrong.test/json", ssl_context=ctx)
    assert e.kind == "tls" and "wrong.test" in str(e)


def test_https_to_a_plain_http_port(env):
    e = _err(env, "https://exit.test:80/json")
    assert e.kind == "tls"


def test_missing_namespace():
    h = Http("qvp-no-such-ns", Resolver("qvp-no-such-ns"), None)
    with pytest.raises(SourceError) as ei:
        h.get("http://127.0.0.1/json", 1.0, CAP)
    assert ei.value.kind == "missing"


def test_bad_url(env):
    assert _err(env, "ftp://exit.test/").kind == "bad_response"


def test_get_cost(env, capsys):
    h = _http(env)
    ctx = ssl.create_default_context(cafile=env["cafile"])
    hs = _http(env, ssl_context=ctx)
    n = 20
    t0 = time.perf_counter()
    for _ in range(n):
        h.get("http://exit.test/json", 2.0, CAP)
    plain = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(n):
        hs.get("https://exit.test/json", 2.0, CAP)
    tls = (time.perf_counter() - t0) / n
    with capsys.disabled():
        print(
            f"\nHTTP GET in a namespace (DNS + connect + GET): {plain * 1e3:.2f} ms;"
            f" HTTPS {tls * 1e3:.2f} ms"
        )
    assert plain < 0.5 and tls < 1.0


# --- the overall deadline against servers that drip -----------------------------------


# Every recv gets a byte within 1.5 s, so a 2 s socket timeout never fires: only
# an overall deadline ends these (the old code was busy for over 60 s).
@pytest.mark.parametrize(
    "scheme, data", [("http", HEADERS_DRIP), ("https", TLS_DRIP)], ids=["headers", "tls-handshake"]
)
def test_a_byte_every_1_5_s_ends_at_the_deadline(env, scheme, data):
    srv = socket_in(env["ns"], socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 8081))
    with Dripper(srv, data, gap=1.5):
        t0 = time.monotonic()
        e = _err(env, f"{scheme}://exit.test:8081/json", timeout=2.0, ssl_context=_ca(env))
        took = time.monotonic() - t0
    # Whichever fires first at the deadline: the last recv's timeout or the shutdown.
    assert e.kind == "timeout"
    assert "timed out" in str(e) or "did not answer in full within the timeout (2 s)" in str(e)
    print(f"{scheme}: a byte every 1.5 s, the 2 s GET ended after {took:.2f} s")
    assert took < 2.3, f"the 2 s GET took {took:.2f} s"


def _ca(env) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=env["cafile"])
