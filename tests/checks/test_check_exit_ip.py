"""The `exit_ip` check against a real whatismyip-like server inside a namespace."""

from __future__ import annotations

import http.server
import json
import time

import pytest

import qbt_vpn_watchdog.checks.exit_ip  # noqa: F401 - registers the check
from qbt_vpn_watchdog.checks import REGISTRY, Context, Runner
from qbt_vpn_watchdog.checks.exit_ip import parse_whatismyip
from qbt_vpn_watchdog.config import parse
from qbt_vpn_watchdog.results import Outcome
from qbt_vpn_watchdog.sources import Sources
from qbt_vpn_watchdog.sources.dns import Resolver
from qbt_vpn_watchdog.sources.http import Http
from tests.support.netns_helpers import dnsmasq, http_server, netns
from tests.support.session_names import unique

NS = unique("qvp-cexit")
EXIT = "10.99.0.7"


def _j(**kw) -> tuple[int, str, bytes]:
    return 200, "application/json", json.dumps(kw).encode()


GEO = {"code": "nl", "name": "Netherlands"}
ROUTES: dict[str, tuple[int, str, bytes]] = {
    "/airvpn": _j(ip=EXIT, airvpn=True, geo=GEO, result="ok"),
    "/not-airvpn": _j(ip=EXIT, airvpn=False, geo=GEO, result="ok"),
    "/plain": _j(ip=EXIT),
    "/v6": _j(ip="2001:DB8::7", airvpn=False, result="ok"),
    "/geo-additional": _j(ip=EXIT, airvpn=True, geo_additional={"country_name": "Sweden"}),
    "/html": (200, "text/html; charset=utf-8", b"<!doctype html><title>Login</title>"),
    "/bad-json": (200, "application/json", b'{"ip": "10.99.0.7", '),
    "/list": (200, "application/json", b'["10.99.0.7"]'),
    "/no-ip": _j(airvpn=True),
    "/bad-ip": _j(ip="<script>", airvpn=True),
    "/airvpn-string": _j(ip=EXIT, airvpn="yes"),
    "/result-error": _j(ip=EXIT, airvpn=True, result="error"),
    "/rate-limited": (429, "text/plain", b"slow down"),
    "/huge": (200, "application/json", b" " * (70 * 1024)),
    "/deep": (200, "application/json", b"[" * 30000 + b"]" * 30000),
    "/binary": (200, "application/octet-stream", bytes(range(256))),
}


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):  # noqa: N802
        if self.path == "/slow":
            time.sleep(1.0)
        status, ctype, body = ROUTES.get(self.path, ROUTES["/airvpn"])
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def ns():
    with netns(NS) as name:
        with (
            dnsmasq(name, "127.0.0.1", 53, "--address=/whatismyip.test/127.0.0.1"),
            http_server(name, "127.0.0.1", 80, Handler),
        ):
            yield name


def _cfg(url: str, extra: str = "", timeout: float = 2.0):
    return parse(
        f"""
        [namespace]
        name = "{NS}"
        [checks.exit_ip]
        url = "{url}"
        timeout = {timeout}
        {extra}
        """
    )


def _run(ns, path: str, extra: str = "", host: str = "127.0.0.1", timeout: float = 2.0) -> Outcome:
    cfg = _cfg(f"http://{host}{path}", extra, timeout)
    resolver = Resolver(ns)
    sources = Sources(
        wireguard=None,
        links=None,
        dns=resolver,
        http=Http(ns, resolver, "127.0.0.1"),
        qbittorrent=None,
    )
    o = REGISTRY["exit_ip"].fn(Context(cfg, sources))
    assert isinstance(o, Outcome)
    if not o.ok:
        assert o.reason in REGISTRY["exit_ip"].reason_names
    return o


@pytest.mark.root
def test_airvpn_exit_passes_by_name_through_the_namespace_resolver(ns):
    o = _run(ns, "/airvpn", host="whatismyip.test")
    assert o.ok, o.detail
    assert dict(o.facts) == {"ip": EXIT, "country": "Netherlands"}
    assert dict(o.observations) == {"airvpn": 1.0}


@pytest.mark.root
def test_not_airvpn(ns):
    o = _run(ns, "/not-airvpn")
    assert o.reason == "not_airvpn"
    assert EXIT in o.detail and "Netherlands" in o.detail
    assert o.observations["airvpn"] == 0.0
    assert o.facts["ip"] == EXIT


@pytest.mark.root
def test_allowed_ip_passes_even_when_not_airvpn(ns):
    o = _run(ns, "/not-airvpn", f'allowed_ips = ["{EXIT}"]')
    assert o.ok and "allowed_ips" in o.detail


@pytest.mark.root
def test_neither_airvpn_nor_allowed(ns):
    o = _run(ns, "/not-airvpn", 'allowed_ips = ["10.99.0.8"]')
    assert o.reason == "not_airvpn" and "nor in allowed_ips" in o.detail


@pytest.mark.root
def test_allowed_ips_only(ns):
    assert _run(ns, "/plain", f'require_airvpn = false\nallowed_ips = ["{EXIT}"]').ok
    o = _run(ns, "/plain", 'require_airvpn = false\nallowed_ips = ["10.99.0.8"]')
    assert o.reason == "not_allowed"
    assert dict(o.observations) == {}  # no airvpn field: no airvpn gauge


@pytest.mark.root
def test_no_requirement_only_reports(ns):
    o = _run(ns, "/plain", "require_airvpn = false")
    assert o.ok and o.facts["ip"] == EXIT and o.facts["country"] == ""


@pytest.mark.root
def test_ipv6_compared_as_addresses(ns):
    assert _run(ns, "/v6", 'allowed_ips = ["2001:db8:0::7"]').ok


@pytest.mark.root
def test_host_public_ip_is_a_leak_whatever_else_holds(ns):
    o = _run(ns, "/airvpn", f'host_public_ip = "{EXIT}"\nallowed_ips = ["{EXIT}"]')
    assert o.reason == "leak" and "host's own public address" in o.detail
    assert o.facts["ip"] == EXIT
    assert _run(ns, "/airvpn", 'host_public_ip = "192.0.2.1"').ok


@pytest.mark.root
def test_require_airvpn_without_the_field(ns):
    o = _run(ns, "/plain")
    assert o.reason == "bad_response" and "require_airvpn = false" in o.detail


@pytest.mark.root
def test_country_from_geo_additional(ns):
    assert _run(ns, "/geo-additional").facts["country"] == "Sweden"


@pytest.mark.root
@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/html", "exit-IP endpoint returned text/html, not JSON"),
        ("/binary", "application/octet-stream, not JSON"),
        ("/bad-json", "invalid JSON"),
        ("/list", "a JSON list, not an object"),
        ("/no-ip", "no 'ip' string"),
        ("/bad-ip", "not an IP address"),
        ("/airvpn-string", "'airvpn' is not true/false"),
        ("/result-error", "result 'error'"),
        ("/rate-limited", "HTTP 429 (rate limited?)"),
        ("/huge", "response larger than 65536 bytes"),
        ("/deep", "invalid JSON"),
    ],
)
def test_junk_is_bad_response(ns, path, words):
    o = _run(ns, path)
    assert o.reason == "bad_response"
    assert words in o.detail


@pytest.mark.root
def test_unreachable(ns):
    o = _run(ns, "/airvpn", host="127.0.0.1:81")
    assert o.reason == "unreachable" and "refused" in o.detail
    o = _run(ns, "/airvpn", host="nowhere.test")  # dnsmasq refuses unknown names
    assert o.reason == "unreachable" and "nowhere.test" in o.detail


@pytest.mark.root
def test_tls_failure(ns):
    cfg = _cfg("https://127.0.0.1:80/airvpn")
    sources = Sources(
        wireguard=None, links=None, dns=None, http=Http(ns, None, None), qbittorrent=None
    )
    o = REGISTRY["exit_ip"].fn(Context(cfg, sources))
    assert o.reason == "tls"


@pytest.mark.root
def test_slow_endpoint_is_unreachable_before_the_runner_timeout(ns):
    cfg = _cfg("http://127.0.0.1/slow", timeout=0.5)
    sources = Sources(
        wireguard=None, links=None, dns=None, http=Http(ns, None, None), qbittorrent=None
    )
    results = Runner({"exit_ip": REGISTRY["exit_ip"]}).run_cycle(
        Context(cfg, sources), {"exit_ip": 0.5}, {}
    )
    r = results["exit_ip"]
    assert r.reason == "unreachable", r.detail
    assert "timeout" in r.detail or "did not answer" in r.detail


def test_parse_whatismyip_pure():
    ip, airvpn, country = parse_whatismyip(
        200, "application/json", b'{"ip": " 10.1.2.3 ", "airvpn": true, "geo": {"code": "se"}}'
    )
    assert (str(ip), airvpn, country) == ("10.1.2.3", True, "se")
    assert (
        parse_whatismyip(200, "", b"\xff\xfe")
        == "exit-IP endpoint returned no content type, not JSON"
    )
    assert "HTTP 502" in parse_whatismyip(502, "text/html", b"")
