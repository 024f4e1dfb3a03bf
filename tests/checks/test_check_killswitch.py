"""killswitch: the verdict from a set of probes (pure), and what remediation does with it."""

from __future__ import annotations

import dataclasses

import pytest

from qbt_vpn_watchdog.checks import classify, killswitch, load_all, reason_of
from qbt_vpn_watchdog.config import Config
from qbt_vpn_watchdog.policy import Settings
from qbt_vpn_watchdog.results import UNKNOWN, UNSAFE
from qbt_vpn_watchdog.sources import (
    NO_PATH,
    OPEN,
    REFUSED,
    KillSwitchReading,
    LeakProbe,
    SourceError,
)
from tests.support.fakes import Fixed, context

KS = ("inet vpn_killswitch",)


def reading(*probes: tuple[str, str, str], tables=None) -> KillSwitchReading:
    return KillSwitchReading(tuple(LeakProbe(i, f, v) for i, f, v in probes), tables)


def test_every_probe_refused_passes():
    o = killswitch.assess(reading(("veth1", "ipv4", REFUSED), ("veth1", "ipv6", REFUSED)))
    assert o.ok and "refused out of veth1 (IPv4/IPv6)" in o.detail
    assert o.facts == {"veth1 ipv4": REFUSED, "veth1 ipv6": REFUSED}
    assert o.observations["probes"] == 2 and o.observations["open"] == 0


def test_a_link_without_ipv6_is_no_way_out_not_a_failure():
    o = killswitch.assess(reading(("veth1", "ipv4", REFUSED), ("veth1", "ipv6", NO_PATH)))
    assert o.ok and "no way out at all from veth1 (IPv6)" in o.detail


def test_no_interface_but_the_tunnel_passes():
    o = killswitch.assess(reading())
    assert o.ok and "nothing can leave another way" in o.detail


def test_no_table_at_all_is_missing():
    o = killswitch.assess(reading(("veth1", "ipv4", OPEN), ("veth1", "ipv6", NO_PATH), tables=()))
    assert (o.ok, o.reason) == (False, "missing")
    assert "veth1 (IPv4)" in o.detail and "netfilter tables: none" in o.detail


def test_nothing_refused_and_tables_unknown_is_missing():
    o = killswitch.assess(reading(("veth1", "ipv4", OPEN), ("veth1", "ipv6", OPEN)))
    assert o.reason == "missing"


def test_a_table_that_lets_ipv4_out_is_lan_open():
    # The killswitch-open lab fault: the table stays, one rule accepts output on the veth.
    o = killswitch.assess(reading(("veth1", "ipv4", OPEN), ("veth1", "ipv6", NO_PATH), tables=KS))
    assert (o.ok, o.reason) == (False, "lan_open")
    assert "inet vpn_killswitch" in o.detail


def test_one_interface_open_beside_a_refusing_one_is_lan_open():
    o = killswitch.assess(
        reading(("veth1", "ipv4", REFUSED), ("macv0", "ipv4", OPEN), ("veth1", "ipv6", REFUSED))
    )
    assert o.reason == "lan_open" and "macv0 (IPv4)" in o.detail and "veth1" not in o.detail


def test_only_ipv6_out_is_ipv6_open():
    o = killswitch.assess(reading(("veth1", "ipv4", REFUSED), ("veth1", "ipv6", OPEN), tables=KS))
    assert (o.ok, o.reason) == (False, "ipv6_open")


@pytest.mark.parametrize("reason", ["missing", "lan_open", "ipv6_open"])
def test_failures_are_unsafe_and_restart_only_our_own_namespace(reason):
    assert classify("killswitch", reason) == UNSAFE
    assert reason_of("killswitch", reason).ours_only
    assert restart_helps("killswitch", reason, ours=True)
    assert not restart_helps("killswitch", reason, ours=False)


def restart_helps(check: str, reason: str, ours: bool) -> bool:
    """The policy's answer, with the registry's reason table, on our namespace or another's."""
    specs = load_all()
    settings = Settings(checks=tuple(specs), reasons={n: s.reason_table for n, s in specs.items()})
    return dataclasses.replace(settings, ours=ours).restart_helps(check, reason)


def test_unreadable_is_unknown_never_unsafe():
    assert classify("killswitch", "unreadable") == UNKNOWN


def test_the_config_says_whose_namespace_it_is():
    cfg = Config()
    assert Settings.from_config(cfg, load_all()).ours is False  # the default: someone else's module
    ours = dataclasses.replace(
        cfg, namespace=dataclasses.replace(cfg.namespace, built_by_vpn_netns=True)
    )
    assert Settings.from_config(ours, load_all()).ours is True


class FakeProber:
    def __init__(self, value=None, error=None):
        self.probe = Fixed(value, error)


def test_the_check_reads_one_probe_set_per_cycle_skipping_the_tunnel():
    prober = FakeProber(reading(("veth1", "ipv4", REFUSED)))
    ctx = context(killswitch=prober)
    assert killswitch.check(ctx).ok
    assert killswitch.check(ctx).ok  # the same cycle: memoized
    assert prober.probe.calls == 1


def test_a_probe_that_cannot_run_is_unreadable():
    prober = FakeProber(error=SourceError("network namespace 'vpn' does not exist"))
    o = killswitch.check(context(killswitch=prober))
    assert (o.ok, o.reason) == (False, "unreadable") and "does not exist" in o.detail
    o = killswitch.check(context())  # no prober at all
    assert o.reason == "unreadable"


def test_render_gives_one_series_per_interface_family_and_verdict():
    from qbt_vpn_watchdog.results import CheckResult

    o = killswitch.assess(reading(("veth1", "ipv4", REFUSED), ("veth1", "ipv6", NO_PATH)))
    (fam,) = killswitch.render(CheckResult.from_outcome("killswitch", o, 0.0, 0.001))
    got = {
        (s.labels["interface"], s.labels["family"], s.labels["verdict"]): s.value
        for s in fam.samples
    }
    assert got[("veth1", "ipv4", REFUSED)] == 1.0 and got[("veth1", "ipv4", OPEN)] == 0.0
    assert got[("veth1", "ipv6", NO_PATH)] == 1.0
    assert len(got) == 6
