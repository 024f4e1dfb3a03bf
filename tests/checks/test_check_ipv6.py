"""ipv6: the routing table read, judged against the tunnel's name (fakes: pure logic)."""

import socket

from qbt_vpn_watchdog.checks import classify, ipv6, reason_of
from qbt_vpn_watchdog.config import Config
from qbt_vpn_watchdog.results import DEGRADED, UNSAFE
from qbt_vpn_watchdog.sources import Route, SourceError
from tests.support.fakes import FakeLinks, context


def no_killswitch_check():
    """The config with the killswitch check off: the ipv6 check has no probe to ask."""
    import dataclasses

    from qbt_vpn_watchdog.config import Config

    cfg = Config()
    off = dataclasses.replace(cfg.checks.killswitch, enabled=False)
    return dataclasses.replace(cfg, checks=dataclasses.replace(cfg.checks, killswitch=off))


def run(*routes, error=None):
    table = {socket.AF_INET6: error if error is not None else tuple(routes)}
    return ipv6.check(context(no_killswitch_check(), links=FakeLinks(table=table)))


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


# --- benign differences (#21): unsafe only when IPv6 can actually leave ------------------

LAN = (Route("fd51:7a6c:1::/64", "qbtvpn-ns", 254), Route("::/0", "qbtvpn-ns", 254))


def run_with(routes, probes=None, lan_prefixes=(), ours=False):
    """``probes``: [(interface, verdict)], a SourceError the probe raises, or None for
    the killswitch check turned off."""
    import dataclasses

    from qbt_vpn_watchdog.sources import KillSwitchReading, LeakProbe

    cfg = no_killswitch_check() if probes is None else Config()
    cfg = dataclasses.replace(
        cfg,
        namespace=dataclasses.replace(cfg.namespace, built_by_vpn_netns=ours),
        checks=dataclasses.replace(
            cfg.checks, ipv6=dataclasses.replace(cfg.checks.ipv6, lan_prefixes=list(lan_prefixes))
        ),
    )
    kw = {"links": FakeLinks(table={socket.AF_INET6: tuple(routes)})}
    if probes is not None:

        class Prober:
            def probe(self, skip):
                if isinstance(probes, SourceError):
                    raise probes
                return KillSwitchReading(tuple(LeakProbe(i, "ipv6", v) for i, v in probes))

        kw["killswitch"] = Prober()
    return ipv6.check(context(cfg, **kw))


def test_routes_out_of_an_interface_the_kill_switch_refuses_ipv6_on_are_contained():
    # The measured case: IPv6 on for the LAN veth, the kill switch still drops IPv6.
    o = run_with(LAN, probes=[("qbtvpn-ns", "refused")])
    assert (o.ok, o.reason) == (False, "route_contained")
    assert classify("ipv6", "route_contained") == DEGRADED
    assert "kill switch refuses IPv6 out of qbtvpn-ns" in o.detail
    assert o.observations["routes_leaking"] == 0


def test_routes_out_of_an_interface_ipv6_gets_out_of_are_unsafe():
    o = run_with(LAN, probes=[("qbtvpn-ns", "open")])
    assert o.reason == "route_outside" and o.observations["routes_leaking"] == 2


def test_a_probe_that_could_not_be_read_is_never_unsafe():
    # EINVAL from a setsockopt, the interface listing failing: whether IPv6 can leave
    # is unknown this cycle, which is no reason to stop torrents (the killswitch check
    # says its own probe failed).
    o = run_with(LAN, probes=SourceError("cannot prepare the probe out of qbtvpn-ns: EINVAL"))
    assert (o.ok, o.reason) == (False, "unreadable")
    assert classify("ipv6", o.reason) not in (UNSAFE,) and "EINVAL" in o.detail
    assert "::/0 dev qbtvpn-ns" in o.detail


def test_an_interface_the_kernel_has_no_ipv6_way_out_of_is_contained():
    # The probe's no_path (link down, no IPv6 address yet: a veth just re-created by
    # our own tier-2 restart, its address still in duplicate-address detection).
    o = run_with(LAN, probes=[("qbtvpn-ns", "no_path")])
    assert (o.ok, o.reason) == (False, "route_contained")
    assert "no IPv6 way out of qbtvpn-ns" in o.detail and "kill switch" not in o.detail


def test_without_the_probe_only_the_lan_prefixes_make_a_route_benign():
    o = run_with(LAN[:1], lan_prefixes=["fd51:7a6c::/32"])
    assert o.reason == "route_contained" and "lan_prefixes" in o.detail
    o = run_with(LAN, lan_prefixes=["fd51:7a6c::/32"])  # the default route carries more
    assert o.reason == "route_outside" and "::/0 dev qbtvpn-ns" in o.detail
    assert "fd51:7a6c:1::/64" not in o.detail  # only the ones IPv6 can leave by


def test_the_remedy_is_a_restart_only_on_our_own_namespace():
    from tests.checks.test_check_killswitch import restart_helps

    assert restart_helps("ipv6", "route_outside", ours=True)
    assert not restart_helps("ipv6", "route_outside", ours=False)
    assert "tunnel's restart turns it off" in run_with(LAN, ours=True).detail
    assert "make the kill switch drop IPv6" in run_with(LAN, ours=False).detail


def test_lan_prefixes_are_validated():
    import pytest

    from qbt_vpn_watchdog.config import ConfigError, parse

    with pytest.raises(ConfigError, match=r"checks\.ipv6\.lan_prefixes"):
        parse('[checks.ipv6]\nlan_prefixes = ["fd51::/16", "not-a-prefix"]\n')


def test_only_link_local_and_loopback_routes_are_said_as_such():
    o = run(Route("::1/128", "lo", 254), Route("fe80::/64", "qbtvpn-ns", 254))
    assert o.ok and o.detail == "no IPv6 route outside the tunnel (2 link-local or loopback only)"
