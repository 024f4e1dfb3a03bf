"""ipv6: the routing table read, judged against the tunnel's name (fakes: pure logic)."""

import socket

from qbt_vpn_watchdog.checks import classify, ipv6, reason_of
from qbt_vpn_watchdog.results import UNSAFE
from qbt_vpn_watchdog.sources import Route, SourceError
from tests.support.fakes import FakeLinks, context


def run(*routes, error=None):
    table = {socket.AF_INET6: error if error is not None else tuple(routes)}
    return ipv6.check(context(links=FakeLinks(table=table)))


def test_no_ipv6_route_at_all_passes():
    o = run()
    assert o.ok and o.detail == "no IPv6 route outside the tunnel (no IPv6 routes at all)"
    assert o.observations["routes_outside_tunnel"] == 0


def test_routes_through_the_tunnel_lo_and_link_local_ones_pass():
    o = run(
        Route("::/0", "wg0", 254),
        Route("fd7d:76ee:e68f:a993::2/128", "wg0", 254),
        Route("::1/128", "lo", 254),
        Route("fe80::/64", "qbtvpn-ns", 254),
    )
    assert o.ok and "2 through wg0" in o.detail


def test_an_address_and_default_route_on_the_lan_side_fail():
    o = run(
        Route("fd51:7a6c:1::/64", "qbtvpn-ns", 254),
        Route("::/0", "qbtvpn-ns", 254),
        Route("::/0", "wg0", 254),
    )
    assert not o.ok and o.reason == "route_outside"
    assert "fd51:7a6c:1::/64 dev qbtvpn-ns" in o.detail and "::/0 dev qbtvpn-ns" in o.detail
    assert o.observations["routes_outside_tunnel"] == 2


def test_a_route_in_another_table_counts_and_says_its_table():
    o = run(Route("2000::/3", "eth9", 100))
    assert o.reason == "route_outside" and "2000::/3 dev eth9 table 100" in o.detail


def test_a_route_without_a_device_cannot_be_shown_to_use_the_tunnel():
    assert run(Route("::/0", "", 254)).reason == "route_outside"


def test_many_routes_are_counted_not_all_listed():
    o = run(*(Route(f"fd00:{i}::/64", "qbtvpn-ns", 254) for i in range(9)))
    assert "and 4 more" in o.detail and o.detail.startswith("9 IPv6 route(s)")


def test_unreadable_table():
    o = run(error=SourceError("IPv6 routes in namespace vpn: No such file", kind="missing"))
    assert o.reason == "unreadable" and "No such file" in o.detail


def test_a_route_outside_is_unsafe_and_a_tunnel_restart_is_the_remedy():
    assert classify("ipv6", "route_outside") == UNSAFE
    assert reason_of("ipv6", "route_outside").restart
    assert classify("ipv6", "unreadable") != UNSAFE
    assert not reason_of("ipv6", "unreadable").restart


def test_only_link_local_and_loopback_routes_are_said_as_such():
    o = run(Route("::1/128", "lo", 254), Route("fe80::/64", "qbtvpn-ns", 254))
    assert o.ok and o.detail == "no IPv6 route outside the tunnel (2 link-local or loopback only)"
