"""Links through pyroute2: message reading, and its sockets on the real kernel, in namespaces of our own."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import pytest

from qbt_vpn_watchdog.sources import Listener, SourceError
from qbt_vpn_watchdog.sources.links import Links, link_state
from qbt_vpn_watchdog.sources.netlink_thread import drop_strays, pyroute2_module
from tests.support.session_names import unique

ifinfmsg = pyroute2_module("pyroute2.netlink.rtnl.ifinfmsg").ifinfmsg


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def ns():
    """A namespace of our own (never one that exists already), deleted afterwards."""
    name = unique("qvw-nl")
    assert not Path("/run/netns", name).exists()
    ip("netns", "add", name)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_link_state_reads_name_mtu_operstate_and_64_bit_counters():
    """An RTM_NEWLINK encoded and decoded by pyroute2, as the kernel would send it."""
    msg = ifinfmsg()
    msg["index"], msg["flags"] = 6, 0x1
    stats = {"rx_packets": 7, "tx_packets": 8, "rx_bytes": 9_000_000_000, "tx_bytes": 10}
    msg["attrs"] = [
        ("IFLA_IFNAME", "wg0"),
        ("IFLA_MTU", 1320),
        ("IFLA_OPERSTATE", "UNKNOWN"),
        ("IFLA_STATS64", stats),
    ]
    msg.encode()
    got = ifinfmsg(msg.data)
    got.decode()
    state = link_state(got, ["10.128.0.42/32"])
    assert (state.name, state.index, state.mtu, state.up) == ("wg0", 6, 1320, True)
    # Above 2**32: the 64-bit counters, not the 32-bit IFLA_STATS.
    assert (state.rx_bytes, state.tx_bytes, state.rx_packets, state.tx_packets) == (
        9_000_000_000, 10, 7, 8,
    )  # fmt: skip
    assert state.addresses == ("10.128.0.42/32",)


@pytest.mark.root
def test_routes_lists_unicast_routes_with_their_device(ns):
    """What `ip -6 route` shows, minus local and blackhole routes; a table above 255 too."""
    for cmd in (
        "link add qvtr0 type veth peer name qvtr1",
        "link set qvtr0 up",
        "-6 addr add fd51:7a6c:9::2/64 dev qvtr0 nodad",
        "-6 route add default via fd51:7a6c:9::1 dev qvtr0",
        "-6 route add fd51:7a6c:8::/64 via fd51:7a6c:9::1 dev qvtr0 table 1000",
        "-6 route add blackhole 2001:db8::/32",
    ):
        ip("-n", ns, *cmd.split())
    links = Links(ns)
    try:
        routes = links.routes(socket.AF_INET6)
    finally:
        links.close()
    got = {str(r) for r in routes}
    assert {"fd51:7a6c:9::/64 dev qvtr0", "::/0 dev qvtr0"} <= got
    assert [r.table for r in routes if r.destination == "fd51:7a6c:8::/64"] == [1000]
    assert not any(r.startswith("2001:db8::") for r in got)
    assert not any(r.startswith("fe80::") and "table 255" in r for r in got)


@pytest.mark.root
def test_a_multipath_route_is_one_route_per_next_hop_with_its_device(ns):
    """Two routers advertising on a LAN: `default nexthop via A dev X nexthop via B dev Y`
    has no device of its own; each hop must keep its own, or the ipv6 check cannot
    ask the kill switch about it (and calls a contained route a leak)."""
    for cmd in (
        "link add qvtr0 type veth peer name qvtr1",
        "link add qvtr2 type veth peer name qvtr3",
        "link set qvtr0 up",
        "link set qvtr2 up",
        "-6 addr add fd51:7a6c:9::2/64 dev qvtr0 nodad",
        "-6 addr add fd51:7a6c:a::2/64 dev qvtr2 nodad",
        "-6 route add default nexthop via fd51:7a6c:9::1 dev qvtr0"
        " nexthop via fd51:7a6c:a::1 dev qvtr2",
        "addr add 10.99.0.2/24 dev qvtr0",
        "addr add 10.99.1.2/24 dev qvtr2",
        "route add 10.50.0.0/16 nexthop via 10.99.0.1 dev qvtr0 nexthop via 10.99.1.1 dev qvtr2",
    ):
        ip("-n", ns, *cmd.split())
    links = Links(ns)
    try:
        v6, v4 = links.routes(socket.AF_INET6), links.routes(socket.AF_INET)
    finally:
        links.close()
    assert sorted(r.interface for r in v6 if r.destination == "::/0") == ["qvtr0", "qvtr2"]
    assert sorted(r.interface for r in v4 if r.destination == "10.50.0.0/16") == [
        "qvtr0",
        "qvtr2",
    ]
    assert all(r.interface for r in v6 + v4)


@pytest.mark.root
def test_listeners_with_address_port_and_the_bound_device(ns):
    ip("-n", ns, "link", "add", "qvtl0", "type", "veth", "peer", "name", "qvtl1")
    ip("-n", ns, "addr", "add", "10.77.8.1/30", "dev", "qvtl0")
    ip("-n", ns, "link", "set", "lo", "up")
    links = Links(ns)
    socks = []
    try:
        index = links.link("qvtl0").index
        from qbt_vpn_watchdog.sources.netns import socket_in

        bound = socket_in(ns, socket.AF_INET6)
        plain = socket_in(ns, socket.AF_INET)
        other = socket_in(ns, socket.AF_INET)
        socks = [bound, plain, other]
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"qvtl0")
        bound.bind(("::", 47123))
        plain.bind(("127.0.0.1", 47124))
        other.bind(("10.77.8.1", 47125))  # bound, not listening: not a listener
        bound.listen()
        plain.listen()
        assert links.tcp_listeners(47123) == (Listener("::", 47123, index),)
        assert links.tcp_listeners(47124) == (Listener("127.0.0.1", 47124, 0),)
        assert links.tcp_listeners(47125) == ()
    finally:
        for s in socks:
            s.close()
        links.close()


@pytest.mark.root
def test_requests_from_many_threads_share_one_socket_and_get_their_own_answers():
    links = Links(None)
    errors, names = [], []

    def ask():
        try:
            for _ in range(50):
                names.append(links.link("lo").name)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        links.close()
    assert not errors and names == ["lo"] * 200 and links._nl.opened == 1


@pytest.mark.root
def test_kernel_error_answers_keep_the_socket(ns):
    links = Links(ns)
    try:
        assert links.link("qvznosuch0") is None  # ENODEV: no such link
        assert links.route_interface("192.0.2.1") is None  # ENETUNREACH: no route at all
        assert links.link("lo").name == "lo"
        assert links._nl.opened == 1
    finally:
        links.close()


def test_a_missing_namespace_is_a_source_error_and_is_not_created():
    name = "qvz-does-not-exist"
    links = Links(name)
    try:
        for call in (
            lambda: links.link("lo"),
            lambda: links.routes(socket.AF_INET),
            lambda: links.tcp_listeners(51413),
        ):
            with pytest.raises(SourceError) as e:
                call()
            assert e.value.kind == "missing" and name in str(e.value)
    finally:
        links.close()
    assert not Path("/run/netns", name).exists()


@pytest.mark.root
def test_no_message_is_kept_per_request():
    """pyroute2 queues the ACK of each `get` for no one: dropped after every call, not kept."""
    links = Links(None)
    try:
        for _ in range(200):
            links.link("lo")
            links.route_interface("127.0.0.1")
        # Without drop_strays: 400 ACKs queued (one per get), +4 KiB RSS each.
        assert links._nl.call(drop_strays, "strays") <= 2
    finally:
        links.close()
