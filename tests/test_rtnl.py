"""The raw netlink client's parsers on constructed messages, and its socket on the real kernel."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from qbt_vpn_watchdog.sources import SourceError, rtnl


def test_attributes_are_aligned_and_a_short_one_ends_the_list():
    data = rtnl.attribute(3, b"wg0\0") + rtnl.attribute(4, struct.pack("=I", 1320))
    assert rtnl.attributes(data, 0) == {3: b"wg0\0", 4: struct.pack("=I", 1320)}
    # A length below the header's own size is junk: stop, do not loop forever.
    assert rtnl.attributes(data + struct.pack("=HH", 2, 9), 0)[4] == struct.pack("=I", 1320)
    assert rtnl.attributes(b"\x01", 0) == {}


def test_parse_link_reads_name_mtu_operstate_and_64_bit_counters():
    stats = struct.pack("=QQQQ", 7, 8, 9_000_000_000, 10) + b"\0" * 160
    payload = (
        struct.pack("=BxHiII", 0, 65534, 6, 0x1, 0)
        + rtnl.attribute(rtnl.IFLA_IFNAME, b"wg0\0")
        + rtnl.attribute(rtnl.IFLA_MTU, struct.pack("=I", 1320))
        + rtnl.attribute(rtnl.IFLA_OPERSTATE, b"\x00")
        + rtnl.attribute(rtnl.IFLA_STATS64, stats)
    )
    got = rtnl.parse_link(payload)
    assert got == {
        "index": 6, "flags": 1, "change": 0, "name": "wg0", "mtu": 1320, "operstate": "UNKNOWN",
        "rx_bytes": 9_000_000_000, "tx_bytes": 10, "rx_packets": 7, "tx_packets": 8,
    }  # fmt: skip


def test_parse_addr_and_route():
    payload = struct.pack("=BBBBI", socket.AF_INET, 32, 0, 0, 6) + rtnl.attribute(
        rtnl.IFA_LOCAL, socket.inet_aton("10.128.0.42")
    )
    assert rtnl.parse_addr(payload) == (6, "10.128.0.42/32")
    route = struct.pack("=BBBBBBBBI", socket.AF_INET, 32, 0, 0, 254, 0, 0, 1, 0)
    assert rtnl.parse_route(route + rtnl.attribute(rtnl.RTA_OIF, struct.pack("=I", 6))) == (1, 6)
    assert rtnl.parse_route(struct.pack("=BBBBBBBBI", 2, 32, 0, 0, 254, 0, 0, 6, 0)) == (6, None)


def test_parse_route_entry_reads_destination_device_and_table():
    head = struct.pack("=BBBBBBBBI", socket.AF_INET6, 64, 0, 0, 254, 0, 0, 1, 0)
    dst = rtnl.attribute(rtnl.RTA_DST, socket.inet_pton(socket.AF_INET6, "fd51:7a6c:1::"))
    oif = rtnl.attribute(rtnl.RTA_OIF, struct.pack("=I", 7))
    assert rtnl.parse_route_entry(head + dst + oif) == (1, "fd51:7a6c:1::/64", 7, 254)
    # A default route has no RTA_DST; a table above 255 comes as RTA_TABLE.
    head = struct.pack("=BBBBBBBBI", socket.AF_INET6, 0, 0, 0, 252, 0, 0, 1, 0)
    table = rtnl.attribute(rtnl.RTA_TABLE, struct.pack("=I", 1000))
    assert rtnl.parse_route_entry(head + table) == (1, "::/0", None, 1000)


@pytest.mark.root
def test_routes_lists_unicast_routes_with_their_device():
    """A real namespace of our own: what `ip -6 route` shows, minus local and blackhole."""
    import subprocess

    from qbt_vpn_watchdog.sources.links import Links

    ns = "qvt-routes"
    if ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        pytest.skip(f"namespace {ns} exists already (not ours: left alone)")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (
            "ip link add qvtr0 type veth peer name qvtr1",
            "ip link set qvtr0 up",
            "ip -6 addr add fd51:7a6c:9::2/64 dev qvtr0 nodad",
            "ip -6 route add default via fd51:7a6c:9::1 dev qvtr0",
            "ip -6 route add blackhole 2001:db8::/32",
        ):
            subprocess.run(["ip", "-n", ns, *cmd.split()[1:]], check=True)
        links = Links(ns)
        try:
            got = {str(r) for r in links.routes(socket.AF_INET6)}
        finally:
            links.close()
        assert {"fd51:7a6c:9::/64 dev qvtr0", "::/0 dev qvtr0"} <= got
        assert not any(r.startswith("2001:db8::") for r in got)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_parse_diag_reads_address_port_and_the_bound_device():
    msg = bytearray(72)
    msg[0] = socket.AF_INET
    msg[1] = rtnl.TCP_LISTEN
    struct.pack_into(">H", msg, 4, 47123)
    msg[8:12] = socket.inet_aton("10.128.0.42")
    struct.pack_into("=I", msg, 40, 3)
    assert rtnl.parse_diag(bytes(msg)) == ("10.128.0.42", 47123, 3)
    msg[0] = socket.AF_INET6
    msg[8:24] = socket.inet_pton(socket.AF_INET6, "fe80::1")
    assert rtnl.parse_diag(bytes(msg)) == ("fe80::1", 47123, 3)
    assert rtnl.parse_diag(bytes(msg[:40])) is None


@pytest.mark.root
def test_requests_from_many_threads_share_one_socket_and_get_their_own_answers():
    nl = rtnl.NetlinkSocket(None, rtnl.NETLINK_ROUTE)
    errors, names = [], []

    def ask():
        try:
            for _ in range(50):
                msgs = nl.request(rtnl.RTM_GETLINK, 0, rtnl.link_request(name="lo"), "link lo")
                names.append(rtnl.parse_link(msgs[0][1])["name"])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    nl.close()
    assert not errors and names == ["lo"] * 200 and nl.opened == 1


@pytest.mark.root
def test_an_error_answer_is_a_netlink_error_with_its_errno():
    nl = rtnl.NetlinkSocket(None, rtnl.NETLINK_ROUTE)
    try:
        with pytest.raises(rtnl.NetlinkError) as e:
            nl.request(rtnl.RTM_GETLINK, 0, rtnl.link_request(name="qvznosuch0"), "link")
        assert e.value.errno == 19  # ENODEV
        # The socket is fine afterwards.
        assert nl.request(rtnl.RTM_GETLINK, 0, rtnl.link_request(name="lo"), "link lo")
        assert nl.opened == 1
    finally:
        nl.close()


def test_a_missing_namespace_is_a_source_error_and_is_not_created(tmp_path):
    nl = rtnl.NetlinkSocket("qvz-does-not-exist", rtnl.NETLINK_ROUTE)
    with pytest.raises(SourceError) as e:
        nl.request(rtnl.RTM_GETLINK, 0, rtnl.link_request(name="lo"), "link lo")
    assert e.value.kind == "missing" and "qvz-does-not-exist" in str(e.value)
