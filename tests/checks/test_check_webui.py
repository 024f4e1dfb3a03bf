"""The webui check: every reason with fakes of the readers, then against qbittorrent-nox."""

from __future__ import annotations

import pytest

from qbt_vpn_watchdog.checks import webui
from qbt_vpn_watchdog.config import (
    ChecksSection,
    Config,
    ExitIpCheck,
    QbittorrentSection,
    WebuiCheck,
)
from qbt_vpn_watchdog.sources import (
    HttpResponse,
    LinkState,
    QbtState,
    SourceError,
    WgDevice,
    WgPeer,
)
from tests.support.fakes import FakeLinks, FakeWireguard, Fixed, context

TESTED: set[str] = set()
FORBIDDEN = HttpResponse(403, {"content-type": "text/plain; charset=UTF-8"}, b"Forbidden", 0.002)
NGINX_404 = HttpResponse(404, {"content-type": "text/html"}, b"<html>404 Not Found</html>", 0.01)


def state(**kw) -> QbtState:
    base = dict(
        version="v4.5.2", api_version="2.8.19", interface_name="wg0", interface_address="",
        listen_port=51413, webui_address="*", webui_port=8080, connection_status="connected",
        dht_nodes=0, dl_speed=0, up_speed=0, dl_total=0, up_total=0,
        interface_addresses=("10.64.1.2",),
    )  # fmt: skip
    base.update(kw)
    return QbtState(**base)


class FakeQbt:
    def __init__(self, s=None, error=None, lan=None):
        self.state = Fixed(s, error)
        self.lan = lan  # HttpResponse or SourceError
        self.probed: list[str] = []

    def webui_probe(self, url=None, timeout=None):
        self.probed.append(url)
        if isinstance(self.lan, SourceError):
            raise self.lan
        return self.lan


class FakeHttp:
    """Answers by URL; anything else times out like a silent tunnel."""

    def __init__(self, answers=None):
        self.answers = dict(answers or {})
        self.urls: list[str] = []

    def get(self, url, timeout, max_bytes):
        self.urls.append(url)
        if url in self.answers:
            return self.answers[url]
        raise SourceError(f"connecting to {url} timed out", kind="timeout")


def device(endpoint="198.18.0.1:1637"):
    return WgDevice("wg0", "uapi", None, (WgPeer("k=", endpoint, 1.0, 92, 92, ("0.0.0.0/0",)),))


def run(
    s=None,
    error=None,
    lan_url="",
    lan=None,
    forwarded=0,
    http=None,
    endpoint="198.18.0.1:1637",
    probe=True,
    probe_addresses=(),
    links=None,
    allowed_ips=(),
):
    cfg = Config(
        qbittorrent=QbittorrentSection(url="http://127.0.0.1:8080", forwarded_port=forwarded),
        checks=ChecksSection(
            webui=WebuiCheck(
                lan_url=lan_url, probe_exposure=probe, probe_addresses=list(probe_addresses)
            ),
            exit_ip=ExitIpCheck(allowed_ips=list(allowed_ips)),
        ),
    )
    qbt = FakeQbt(s or state(), error, lan)
    http = http if http is not None else FakeHttp()
    if links is None:
        links = FakeLinks({"wg0": LinkState("wg0", 5, True, 1320, ("10.64.1.2/32",), 0, 0, 0, 0)})
    ctx = context(
        cfg, qbittorrent=qbt, http=http, links=links, wireguard=FakeWireguard(device(endpoint))
    )
    o = webui.check(ctx)
    TESTED.add(o.reason)
    return o, qbt, http


def test_logged_in_and_nothing_answers_through_the_tunnel_passes():
    o, qbt, http = run()
    assert o.ok, o.detail
    assert "also on the tunnel" in o.detail  # bound to "*"
    assert qbt.probed == []  # the LAN URL is qbittorrent.url: the login proved it
    assert http.urls == ["http://198.18.0.1:8080/api/v2/app/version"]
    assert o.observations["exposure_probes"] == 1 and o.observations["exposure_answers"] == 0
    assert dict(o.facts) == {"lan_url": "http://127.0.0.1:8080", "webui_address": "*"}


@pytest.mark.parametrize("kind, reason", [("login", "login"), ("password_file", "password_file"),
                                          ("unreachable", "unreachable"),
                                          ("bad_response", "bad_response")])  # fmt: skip
def test_login_and_reachability_from_the_state_read(kind, reason):
    o, _, _ = run(error=SourceError("qBittorrent at http://127.0.0.1:8080: nope", kind=kind))
    assert o.reason == reason and "nope" in o.detail


def test_other_lan_url_is_probed_without_login():
    o, qbt, _ = run(lan_url="http://192.168.1.10:8080/", lan=FORBIDDEN)
    assert o.ok and qbt.probed == ["http://192.168.1.10:8080"]
    assert o.observations["lan_latency_seconds"] == FORBIDDEN.latency
    o, _, _ = run(lan_url="http://192.168.1.10:8080", lan=HttpResponse(200, {}, b"v4.5.2\n", 0.0))
    assert o.ok  # a whitelisted LAN gets the version without logging in


def test_lan_url_not_answering_or_not_qbittorrent_is_unreachable():
    err = SourceError("WebUI at http://192.168.1.10:8080: connection refused", kind="unreachable")
    o, _, _ = run(lan_url="http://192.168.1.10:8080", lan=err)
    assert o.reason == "unreachable" and "connection refused" in o.detail
    o, _, _ = run(lan_url="http://192.168.1.10:8080", lan=NGINX_404)
    assert o.reason == "unreachable" and "HTTP 404" in o.detail


def test_a_password_in_the_lan_url_never_reaches_the_detail_or_the_facts():
    # A reverse proxy's basic auth in the URL: details are logged, facts printed by
    # `check --json`.
    secret = "hunter2"
    for lan in (NGINX_404, FORBIDDEN):
        o, qbt, _ = run(lan_url=f"http://admin:{secret}@192.168.1.10:8080", lan=lan)
        shown = f"{o.detail} {dict(o.facts)}"
        assert secret not in shown and "admin:" not in shown, shown
        assert "http://192.168.1.10:8080" in shown
        assert qbt.probed == [f"http://admin:{secret}@192.168.1.10:8080"]  # still used to probe


def test_webui_on_the_forwarded_port_is_exposed():
    o, _, _ = run(state(webui_port=47000), forwarded=47000)
    assert o.reason == "exposed" and "47000" in o.detail


def test_webui_bound_to_a_tunnel_address_is_exposed():
    o, _, _ = run(state(webui_address="10.64.1.2"))
    assert o.reason == "exposed" and "tunnel address" in o.detail
    o, _, _ = run(state(webui_address="192.168.1.10"))  # the LAN side only
    assert o.ok and "also on the tunnel" not in o.detail


def test_webui_answering_at_the_vpn_servers_address_is_exposed():
    hit = {"http://198.18.0.1:8080/api/v2/app/version": FORBIDDEN}
    o, _, http = run(http=FakeHttp(hit), forwarded=47000)
    assert o.reason == "exposed" and "198.18.0.1:8080" in o.detail
    assert sorted(http.urls) == sorted(
        ["http://198.18.0.1:8080/api/v2/app/version", "http://198.18.0.1:47000/api/v2/app/version"]
    )


def test_probe_targets_come_from_config_and_the_peer_endpoint():
    _, _, http = run(
        probe_addresses=["203.0.113.7", "2001:db8::7"],
        allowed_ips=["203.0.113.7", "198.18.1.1"],  # the exits exit_ip accepts
        endpoint="[2001:db8::1]:1637",
    )
    assert sorted(http.urls) == sorted(
        [
            "http://203.0.113.7:8080/api/v2/app/version",
            "http://[2001:db8::7]:8080/api/v2/app/version",
            "http://198.18.1.1:8080/api/v2/app/version",
            "http://[2001:db8::1]:8080/api/v2/app/version",
        ]
    )
    _, _, http = run(endpoint="europe.vpn.airdns.org:1637")  # names are never resolved here
    assert http.urls == []


def test_other_answers_through_the_tunnel_are_not_exposure():
    o, _, _ = run(http=FakeHttp({"http://198.18.0.1:8080/api/v2/app/version": NGINX_404}))
    assert o.ok


def test_probe_can_be_turned_off():
    o, _, http = run(
        probe=False, http=FakeHttp({"http://198.18.0.1:8080/api/v2/app/version": FORBIDDEN})
    )
    assert o.ok and http.urls == [] and "exposure_probes" not in o.observations


def test_looks_like_qbittorrent_with_host_header_validation_on():
    # Recorded from 5.1.0 (validation on): a logged-in GET whose Host header names another port.
    import json
    from pathlib import Path

    rec = json.loads(
        (Path(__file__).resolve().parents[1] / "fixtures/qbittorrent/5.1.0/app_version_foreign_port.json")
        .read_text()
    )  # fmt: skip
    r = HttpResponse(rec["status"], rec["headers"], rec["body"].encode(), 0.0)
    assert r.status == 401 and webui.looks_like_qbittorrent(r)
    frame_only = HttpResponse(401, {"x-frame-options": "SAMEORIGIN"}, b"Unauthorized", 0.0)
    assert webui.looks_like_qbittorrent(frame_only)  # a policy replaced by a proxy
    # Any other 401 is not evidence of a qBittorrent.
    assert not webui.looks_like_qbittorrent(HttpResponse(401, {}, b"Unauthorized", 0.0))
    basic = HttpResponse(401, {"www-authenticate": 'Basic realm="x"'}, b"Unauthorized", 0.0)
    assert not webui.looks_like_qbittorrent(basic)


def test_looks_like_qbittorrent():
    assert webui.looks_like_qbittorrent(FORBIDDEN)
    assert webui.looks_like_qbittorrent(HttpResponse(200, {}, b"v5.0.1", 0))
    assert not webui.looks_like_qbittorrent(HttpResponse(200, {}, b"<html>", 0))
    assert not webui.looks_like_qbittorrent(HttpResponse(403, {}, b"<h1>Forbidden</h1>", 0))


def test_every_reason_is_covered():
    assert {r.name for r in webui.REASONS} <= TESTED


# --- against a real qbittorrent-nox --------------------------------------------------------


@pytest.mark.root
@pytest.mark.qbittorrent
def test_against_real_qbittorrent_nox():
    """Login from the root namespace over the veth; the exposure probe runs in the namespace.

    Probing the namespace's own tunnel address stands in for a server that
    forwards the WebUI port back into the tunnel: a WebUI bound to "*" answers
    there, and the check must say so.
    """
    import dataclasses
    import subprocess

    from qbt_vpn_watchdog.checks import Context
    from qbt_vpn_watchdog.config import NamespaceSection, WireguardSection
    from qbt_vpn_watchdog.sources import Sources
    from qbt_vpn_watchdog.sources.http import Http
    from qbt_vpn_watchdog.sources.links import Links
    from qbt_vpn_watchdog.sources.qbittorrent import Qbittorrent
    from tests.support.qbt_nox import PASSWORD, USERNAME, QbtNox

    q = QbtNox("webui", root_link=True)
    q.start()
    links = Links(q.netns)
    try:
        qbt = Qbittorrent(q.url, USERNAME, lambda: PASSWORD, 5.0)
        src = Sources(wireguard=FakeWireguard(device("10.77.0.1:1637")), links=links, dns=None,
                      http=Http(q.netns, None, None), qbittorrent=qbt)  # fmt: skip

        def cfg(probe_addresses):
            return Config(
                namespace=NamespaceSection(name=q.netns),
                wireguard=WireguardSection(interface="qvq-tun"),
                qbittorrent=QbittorrentSection(url=q.url),
                checks=ChecksSection(
                    webui=WebuiCheck(probe_addresses=probe_addresses, timeout=2.0)
                ),
            )

        o = webui.check(Context(cfg([]), src))
        assert o.ok, o.detail
        assert o.observations["exposure_probes"] == 1  # 10.77.0.1: nothing there
        o = webui.check(Context(cfg(["10.77.0.2"]), src))
        assert o.reason == "exposed" and "10.77.0.2:8080" in o.detail

        # A forward from another port (8443 -> 8080) to the WebUI, as a VPN's port
        # forward to a different local port would be. With host header validation
        # on (5.1's profile) qBittorrent answers 401, and it must still be seen.
        subprocess.run(
            ["ip", "netns", "exec", q.netns, "nft", "-f", "-"],
            input="table ip qvq_fwd {\n chain out {\n  type nat hook output priority -100;\n"
            "  ip daddr 10.77.0.2 tcp dport 8443 redirect to :8080\n }\n}\n",
            text=True, check=True,
        )  # fmt: skip
        fwd = dataclasses.replace(cfg(["10.77.0.2"]), qbittorrent=QbittorrentSection(
            url=q.url, forwarded_port=8443))  # fmt: skip
        answer = src.http.get("http://10.77.0.2:8443/api/v2/app/version", 2.0, 4096)
        assert answer.status == (401 if q.protections else 403), answer
        o = webui.check(Context(fwd, src))
        assert o.reason == "exposed" and "10.77.0.2:8443" in o.detail, o.detail
    finally:
        links.close()
        q.stop()
