"""The path_mtu check's decisions, with the prober faked (its own tests: tests/sources/test_pmtu.py,
and the lab's mtu faults in tests/lab/test_lab_faults.py)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from qbt_vpn_watchdog.checks import classify, load_all, path_mtu
from qbt_vpn_watchdog.config import Config, parse
from qbt_vpn_watchdog.policy import Memory, Settings, decide
from qbt_vpn_watchdog.results import DEGRADED, CheckResult
from qbt_vpn_watchdog.sources import LinkState, PathMtu, SourceError
from tests.support.fakes import FakeDns, FakeLinks, context

GW = "10.128.0.1"


def link(mtu=1320, up=True):
    return LinkState("wg0", 5, up, mtu, ("10.128.0.42/32",), 0, 0, 0, 0)


class FakePmtu:
    def __init__(self, result: PathMtu | None = None) -> None:
        self.result, self.calls = result, []

    def measure(self, target, mtu, budget=8.0, thorough=True):
        self.calls.append((target, mtu, budget))
        self.thorough = thorough
        return self.result


def measured(full=True, answered=True, largest=1320, down=None, mtu=1320):
    return PathMtu(GW, mtu, answered, full, largest, down, 0.002 if answered else None, 2)


def failed_before(reason="large_packets_lost"):
    return (CheckResult("path_mtu", False, reason, "", {}, {}, 0.0, 0.1),)


def run(pmtu=None, links=None, cfg_text="", nameserver=GW, routes=None, history=None):
    cfg = parse(cfg_text) if cfg_text else None
    links = links or FakeLinks({"wg0": link()}, routes or {GW: "wg0"})
    ctx = context(
        cfg, history=failed_before() if history is None else history, links=links,
        dns=FakeDns(nameserver), pmtu=pmtu,
    )  # fmt: skip
    return path_mtu.check(ctx)


def test_full_size_both_ways_passes_with_the_measured_size():
    p = FakePmtu(measured())
    o = run(p)
    assert o.ok, o.detail
    assert o.observations == {"path_mtu_bytes": 1320.0, "tunnel_mtu_bytes": 1320.0}
    assert p.calls == [(GW, 1320, 0.8 * 10.0)]  # the tunnel's own MTU, within its budget
    assert "1320-byte packets cross both ways" in o.detail


@pytest.mark.parametrize(
    ("down", "way"),
    [(False, "from the VPN server"), (True, "to the VPN server"), (None, "")],
)
def test_small_pass_large_lost_reports_the_largest_and_the_way(down, way):
    o = run(FakePmtu(measured(full=False, largest=1280, down=down)))
    assert (o.ok, o.reason) == (False, "large_packets_lost")
    assert o.observations["path_mtu_bytes"] == 1280.0
    assert "largest that crosses" in o.detail and "1280 bytes" in o.detail
    assert "Set the tunnel's MTU to 1280 or less" in o.detail
    if way:
        assert way in o.detail
    else:
        assert "VPN server" not in o.detail
    assert o.facts["direction"] == {False: "down", True: "up", None: "unknown"}[down]


@pytest.mark.parametrize("answered", [True, False])
def test_a_first_failed_measurement_is_held_back_as_provisional(answered):
    lost = measured(full=False, answered=answered, largest=1280 if answered else None)
    ok_before = (CheckResult("path_mtu", True, "ok", "", {}, {}, 0.0, 0.1),)
    for history in ((), ok_before):
        p = FakePmtu(lost)
        o = run(p, history=history)
        assert not p.thorough, "a first look only"
        assert o.ok and o.provisional and o.state == path_mtu.SUSPECT, o.detail
        assert "measuring again" in o.detail and "path_mtu_bytes" not in o.observations
    # The next measurement fails too: now it is reported.
    suspect = CheckResult("path_mtu", True, "ok", "", {}, {}, 0.0, 0.1, path_mtu.SUSPECT, True)
    p = FakePmtu(lost)
    o = run(p, history=(suspect,))
    assert p.thorough, "the confirming measurement finds the size and the way"
    assert o.reason == ("large_packets_lost" if answered else "no_echo")
    assert not o.provisional


def test_a_full_size_reply_after_a_suspect_one_is_plain_ok():
    suspect = CheckResult("path_mtu", True, "ok", "", {}, {}, 0.0, 0.1, path_mtu.SUSPECT, True)
    o = run(FakePmtu(measured()), history=(suspect,))
    assert o.ok and not o.provisional and o.observations["path_mtu_bytes"] == 1320.0


def test_no_echo_at_all_is_not_a_black_hole_and_has_no_size():
    o = run(FakePmtu(measured(full=False, answered=False, largest=None)))
    assert o.reason == "no_echo"
    assert "path_mtu_bytes" not in o.observations
    assert "cannot be measured" in o.detail


def test_never_probes_outside_the_tunnel():
    p = FakePmtu(measured())
    o = run(p, routes={GW: "eth0"})
    assert o.reason == "not_measured" and "eth0" in o.detail and "not probed" in o.detail
    assert p.calls == []


def test_a_configured_target_is_used_instead_of_the_resolver():
    p = FakePmtu(measured())
    cfg = '[checks.path_mtu]\ntarget = "10.128.0.9"\n'
    o = run(p, cfg_text=cfg, routes={"10.128.0.9": "wg0"})
    assert o.ok and p.calls[0][0] == "10.128.0.9"


@pytest.mark.parametrize(
    ("links", "nameserver", "words"),
    [
        (FakeLinks({}, {GW: "wg0"}), GW, "missing"),
        (FakeLinks({"wg0": link(up=False)}, {GW: "wg0"}), GW, "down"),
        (None, None, "checks.path_mtu.target"),
        (None, "fd7d:76ee:e68f:a993::1", "IPv4"),
    ],
)
def test_not_measured_says_why(links, nameserver, words):
    p = FakePmtu(measured())
    o = run(p, links=links, nameserver=nameserver)
    assert o.reason == "not_measured" and words in o.detail
    assert p.calls == []


def test_a_failed_route_lookup_is_not_measured():
    class Broken(FakeLinks):
        def route_interface(self, dst):
            raise SourceError("netlink: no such namespace", kind="missing")

    o = run(FakePmtu(measured()), links=Broken({"wg0": link()}))
    assert o.reason == "not_measured" and "no such namespace" in o.detail


def test_without_a_prober_it_says_so():
    assert run(None).reason == "not_measured"


def test_every_reason_is_degraded_and_the_policy_never_acts_on_it():
    spec = load_all()["path_mtu"]
    assert {classify("path_mtu", r) for r in (*spec.reason_names, "error", "timeout")} == {DEGRADED}
    s = Settings.from_config(Config(), {"path_mtu": spec})  # the table the daemon hands it
    s = replace(s, checks=("path_mtu",))
    hist = {
        "path_mtu": [
            CheckResult("path_mtu", False, "large_packets_lost", "", {}, {}, float(t), 0.1)
            for t in range(20)
        ]
    }
    d = decide(hist, Memory(), s, 21.0, random.Random(0))
    assert d.state == "ok" and d.actions == ()


def test_a_missing_namespace_is_not_measured():
    class Gone(FakeLinks):
        def link(self, name):
            raise SourceError(
                "network namespace 'vpn' does not exist (/run/netns/vpn)", kind="missing"
            )

    p = FakePmtu(measured())
    o = run(p, links=Gone())
    assert o.reason == "not_measured" and "does not exist" in o.detail and p.calls == []


def test_a_missing_namespace_read_for_real_is_a_reason_not_an_error(tmp_path):
    # The one-shot path with the real sources: the namespace is named but not there.
    from qbt_vpn_watchdog.cli import run_once

    (r,) = run_once(parse('[namespace]\nname = "qvn-no-such-ns"\n'), ["path_mtu"])
    assert r.reason == "not_measured", (r.reason, r.detail)
    assert "qvn-no-such-ns" in r.detail
