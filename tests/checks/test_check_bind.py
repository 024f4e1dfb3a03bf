"""The bind check: every reason with fakes of the readers, the happy path against qbt-nox."""

from __future__ import annotations

import dataclasses

import pytest

from qbt_vpn_watchdog.checks import bind
from qbt_vpn_watchdog.config import Config, QbittorrentSection
from qbt_vpn_watchdog.sources import LinkState, Listener, QbtState, SourceError
from tests.support.fakes import FakeLinks, Fixed, context

TESTED: set[str] = set()


def state(**kw) -> QbtState:
    base = dict(
        version="v4.5.2", api_version="2.8.19", interface_name="wg0", interface_address="",
        listen_port=51413, webui_address="*", webui_port=8080, connection_status="firewalled",
        dht_nodes=0, dl_speed=0, up_speed=0, dl_total=0, up_total=0,
        interface_addresses=("10.64.1.2", "fd7d:76ee:e68f:a993::2"),
    )  # fmt: skip
    base.update(kw)
    return QbtState(**base)


def link(*addrs: str) -> LinkState:
    return LinkState("wg0", 5, True, 1320, addrs, 0, 0, 0, 0)


class FakeQbt:
    def __init__(self, s: QbtState | None = None, error: SourceError | None = None):
        self.state = Fixed(s, error)


class RaisingLinks(FakeLinks):
    def link(self, name):
        raise SourceError("network namespace 'vpn' does not exist", kind="missing")


def run(s=None, error=None, links=None, forwarded=0, **cfg_kw):
    cfg = Config()
    if forwarded:
        cfg = dataclasses.replace(cfg, qbittorrent=QbittorrentSection(forwarded_port=forwarded))
    if links is None:
        links = FakeLinks({"wg0": link("10.64.1.2/32", "fd7d:76ee:e68f:a993::2/128")})
    o = bind.check(context(cfg, qbittorrent=FakeQbt(s, error), links=links))
    TESTED.add(o.reason)
    return o


def test_bound_to_the_tunnel_passes_with_facts_and_observations():
    o = run(state(dht_nodes=3))
    assert o.ok, o.detail
    assert dict(o.facts) == {"interface": "wg0", "address": "10.64.1.2"}
    assert o.observations["listen_port"] == 51413 and o.observations["dht_nodes"] == 3
    assert o.observations["interface_addresses"] == 2


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("login", "login"),
        ("password_file", "password_file"),
        ("unreachable", "unreachable"),
        ("bad_response", "bad_response"),
        ("timeout", "unreachable"),
    ],
)
def test_unreadable_qbittorrent(kind, reason):
    o = run(error=SourceError("qBittorrent at http://x: boom", kind=kind))
    assert o.reason == reason and "boom" in o.detail


def test_bound_to_any_interface_is_unbound():
    o = run(state(interface_name="", interface_addresses=()))
    assert o.reason == "unbound" and "any interface" in o.detail


def test_bound_elsewhere_is_wrong_interface():
    o = run(state(interface_name="eth0", interface_addresses=("192.168.1.5",)))
    assert o.reason == "wrong_interface" and "eth0" in o.detail
    assert o.facts["interface"] == "eth0"


def test_tunnel_deleted_is_no_address():
    # LAB-NOTES: qBittorrent still says "firewalled"; its interface has no address.
    o = run(state(interface_addresses=()), links=FakeLinks({}))
    assert o.reason == "no_address" and "down or gone" in o.detail


def test_only_link_local_addresses_count_as_none():
    o = run(state(interface_addresses=("fe80::1",)))
    assert o.reason == "no_address"


def test_link_missing_in_namespace_is_no_address():
    o = run(state(), links=FakeLinks({}))
    assert o.reason == "no_address" and "does not exist" in o.detail
    o = run(state(), links=RaisingLinks())
    assert o.reason == "no_address" and "cannot read wg0" in o.detail


def test_link_without_address_is_no_address():
    o = run(state(), links=FakeLinks({"wg0": link()}))
    assert o.reason == "no_address" and "has no address in the namespace" in o.detail


def test_qbittorrent_sees_another_wg0():
    o = run(state(interface_addresses=("192.168.7.9",)))
    assert o.reason == "wrong_interface" and "not the same interface" in o.detail


def test_bound_address_not_on_the_tunnel():
    o = run(state(interface_address="10.9.9.9"))
    assert o.reason == "wrong_address" and "10.9.9.9" in o.detail
    assert run(state(interface_address="10.64.1.2")).ok
    assert run(state(interface_address="fd7d:76ee:e68f:a993::2")).ok
    assert run(state(interface_address="junk")).reason == "wrong_address"


def test_forwarded_port():
    o = run(state(listen_port=51413), forwarded=47000)
    assert o.reason == "wrong_port" and "47000" in o.detail
    assert run(state(listen_port=47000), forwarded=47000).ok
    assert run(state(listen_port=12345)).ok  # no forwarded port configured: any port


def listening(*listeners: Listener) -> FakeLinks:
    wg0 = link("10.64.1.2/32", "fd7d:76ee:e68f:a993::2/128", "fe80::1/64")
    return FakeLinks({"wg0": wg0}, listeners={51413: listeners})


def test_listener_bound_to_the_tunnel_as_it_is_now_passes():
    assert run(state(), links=listening(Listener("10.64.1.2", 51413, 5))).ok
    # Not device-bound, but on the tunnel's own address: fine too.
    assert run(state(), links=listening(Listener("10.64.1.2", 51413, 0))).ok


def test_nothing_listening_on_the_port_is_not_listening():
    o = run(state(), links=listening())
    assert o.reason == "not_listening" and "port 51413" in o.detail
    # A TUN device's own link-local address carries no torrent traffic.
    o = run(state(), links=listening(Listener("fe80::1", 51413, 5)))
    assert o.reason == "not_listening"


def test_listener_on_the_old_tunnel_index_is_stale():
    # The lab measured it: tunnel re-created as index 6, qBittorrent's socket
    # still "10.128.0.42%if3"; its preferences look perfect.
    o = run(state(), links=listening(Listener("10.64.1.2", 51413, 3)))
    assert o.reason == "stale_listener"
    assert "interface index 3" in o.detail and "index 5 now" in o.detail
    # A socket on any address, not device-bound, is not "bound to the tunnel" either.
    assert run(state(), links=listening(Listener("0.0.0.0", 51413, 0))).reason == "stale_listener"


def test_one_good_listener_among_stale_ones_passes():
    links = listening(Listener("10.64.1.2", 51413, 3), Listener("fd7d:76ee:e68f:a993::2", 51413, 5))
    assert run(state(), links=links).ok


def test_unreadable_listeners_pass_and_say_so():
    err = SourceError("sock_diag socket in namespace vpn: Permission denied")
    links = FakeLinks({"wg0": link("10.64.1.2/32")}, listeners={51413: err})
    o = run(state(), links=links)
    assert o.ok and "listening sockets not checked" in o.detail and "Permission" in o.detail


def test_every_reason_is_covered():
    # Runs last in this file (pytest keeps file order).
    assert {r.name for r in bind.REASONS} <= TESTED


# --- the happy path against a real qbittorrent-nox -------------------------------------


@pytest.mark.root
@pytest.mark.qbittorrent
def test_against_real_qbittorrent_nox():
    from qbt_vpn_watchdog.checks import Context
    from qbt_vpn_watchdog.config import WireguardSection
    from qbt_vpn_watchdog.sources import Sources
    from qbt_vpn_watchdog.sources.links import Links
    from qbt_vpn_watchdog.sources.qbittorrent import Qbittorrent
    from tests.support.qbt_nox import LISTEN_PORT, PASSWORD, USERNAME, QbtNox

    q = QbtNox("bind", root_link=True)
    q.start()
    try:
        cfg = Config(
            wireguard=WireguardSection(interface="qvq-tun"),
            qbittorrent=QbittorrentSection(url=q.url, forwarded_port=LISTEN_PORT),
            namespace=dataclasses.replace(Config().namespace, name=q.netns),
        )
        qbt = Qbittorrent(q.url, USERNAME, lambda: PASSWORD, 5.0)
        links = Links(q.netns)
        src = Sources(wireguard=None, links=links, dns=None, http=None, qbittorrent=qbt)
        o = bind.check(Context(cfg, src))
        assert o.ok, o.detail
        assert o.facts["interface"] == "qvq-tun" and o.facts["address"] == "10.77.0.2"
        # The tunnel goes away: qBittorrent's interface has no address any more.
        import subprocess

        subprocess.run(["ip", "-n", q.netns, "link", "del", "qvq-tun"], check=True)
        o = bind.check(Context(cfg, src))
        assert o.reason == "no_address", o.detail
        links.close()
    finally:
        q.stop()
