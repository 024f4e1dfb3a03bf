"""The HTTP endpoints with real clients: format negotiation, gzip, HEAD, the landing page.

The server is the daemon's (qbt_vpn_watchdog.http_server) on a loopback port, serving a
full snapshot through the real Exposition; the clients are requests, the
standard library's http.client and curl.
"""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import shutil
import subprocess
from html.parser import HTMLParser
from urllib.parse import urljoin

import pytest
import requests
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from qbt_vpn_watchdog.http_server import HttpServer
from qbt_vpn_watchdog.metrics import Exposition
from tests.core.test_metrics_collector import full_snapshot

# What Prometheus 2.x sends when it scrapes (scrape.go's acceptHeader, and gzip).
PROMETHEUS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


class Served:
    def __init__(self) -> None:
        self.snapshot = full_snapshot()
        self.exposition = Exposition(lambda: self.snapshot)
        self.server = HttpServer(self.exposition.render, lambda: (200, "alive; ok: 6/6"))
        self.server.start(("127.0.0.1", 0))
        self.port = self.server.address[1]
        self.base = f"http://127.0.0.1:{self.port}/"

    def raw(self, method: str, path: str, headers: dict[str, str] | None = None):
        """(status, headers, body) through http.client, which adds no Accept-Encoding."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            c.request(method, path, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()


@pytest.fixture
def served():
    s = Served()
    yield s
    s.server.stop()


@pytest.fixture
def session():
    with requests.Session() as s:
        s.trust_env = False  # loopback only: no proxy from the environment
        yield s


def samples(families) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }


def test_prometheus_gets_openmetrics_gzipped(served, session):
    r = session.get(served.base + "metrics", headers=PROMETHEUS, timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert r.headers["Content-Encoding"] == "gzip"
    assert r.text.endswith("# EOF\n")
    om = {f.name: f for f in parse_openmetrics(r.text)}
    assert om["qbtvpn_cycles"].type == "counter" and om["qbtvpn_build"].type == "info"
    # The same values as the text format, sample by sample.
    plain = served.raw("GET", "/metrics")[2].decode()
    om_samples = samples(om.values())
    text_samples = samples(parse_text(plain))
    assert om_samples == text_samples


def test_a_plain_get_gets_the_text_format_uncompressed(served):
    status, headers, body = served.raw("GET", "/metrics")
    assert status == 200 and headers["content-type"] == TEXT_FORMAT
    assert "content-encoding" not in headers and headers["vary"] == "Accept, Accept-Encoding"
    assert b"# EOF" not in body and b"qbtvpn_cycles_total 42.0" in body


def test_gzip_only_when_accepted_and_the_same_bytes_inside(served):
    _, _, plain = served.raw("GET", "/metrics")
    status, headers, body = served.raw("GET", "/metrics", {"Accept-Encoding": "gzip, br"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(body) < len(plain) / 3
    assert gzip.decompress(body) == plain
    _, headers, _ = served.raw("GET", "/metrics", {"Accept-Encoding": "identity"})
    assert "content-encoding" not in headers


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/", "/nowhere"])
def test_head_is_get_without_the_body(served, path):
    g_status, g_headers, g_body = served.raw("GET", path, PROMETHEUS)
    h_status, h_headers, h_body = served.raw("HEAD", path, PROMETHEUS)
    assert h_status == g_status and h_body == b""
    assert h_headers["content-type"] == g_headers["content-type"]
    assert h_headers.get("content-encoding") == g_headers.get("content-encoding")
    assert int(h_headers["content-length"]) == len(g_body)


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def test_the_landing_page_links_metrics_healthz_and_readyz(served, session):
    r = session.get(served.base, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
    page = Links()
    page.feed(r.text)
    targets = {urljoin(r.url, h) for h in page.hrefs}
    assert targets == {served.base + p for p in ("metrics", "healthz", "readyz")}
    for url in targets:
        assert session.get(url, timeout=5).status_code == 200, url
    assert session.get(served.base + "healthz", timeout=5).text == "alive; ok: 6/6\n"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_negotiates_and_decompresses(served):
    out = subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "--compressed", "-H", f"Accept: {PROMETHEUS['Accept']}",
         "-D", "-", served.base + "metrics"],
        capture_output=True, timeout=10, check=True,
    ).stdout.decode()  # fmt: skip
    head, _, body = out.partition("\r\n\r\n")
    assert "content-encoding: gzip" in head.lower()
    assert body.endswith("# EOF\n") and "qbtvpn_healthy 0.0" in body


def test_each_variant_renders_once_per_snapshot_and_the_loop_renders_them_again(served):
    expo = served.exposition
    a, ctype = expo.render("", False)
    assert ctype == TEXT_FORMAT and expo.render("", False)[0] is a  # cached
    om, _ = expo.render(PROMETHEUS["Accept"], True)
    assert expo.render(PROMETHEUS["Accept"], True)[0] is om
    served.snapshot = dataclasses.replace(served.snapshot, cycles=43)
    expo.prerender()  # what the loop does after a cycle: both variants, for the new snapshot
    _, variants = expo._cached
    assert {(c.split(";")[0], gz) for c, gz in variants} == {
        ("text/plain", False),
        ("application/openmetrics-text", True),
    }
    assert b"qbtvpn_cycles_total 43.0" in expo.render("", False)[0]
