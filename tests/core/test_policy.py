"""The remediation policy: readable examples of every transition, then properties.

The policy is pure (watchdog/qbt_vpn_watchdog/policy.py), so these tests drive it cycle by cycle
with constructed check results. The properties that involve torrents run the
real ``Remediator`` against a small model of qBittorrent (torrents with a
paused flag and tags, the semantics of ``stop_active``/``start_tagged``).
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qbt_vpn_watchdog import config as config_mod
from qbt_vpn_watchdog.actions import Remediator
from qbt_vpn_watchdog.checks import load_all, names
from qbt_vpn_watchdog.policy import (
    DEGRADED,
    SAFE,
    UNKNOWN,
    UNSAFE,
    Decision,
    Memory,
    Settings,
    backoff_delay,
    decide,
    tier_for,
    tripped,
)
from qbt_vpn_watchdog.results import CheckResult, Reason
from qbt_vpn_watchdog.sources import LinkState, Listener, QbtState, TorrentBrief, WgDevice, WgPeer

CHECKS = names()
# The checks' reasons, as the daemon hands them to the policy.
TABLE = {n: spec.reason_table for n, spec in load_all().items()}


def res(check: str, reason: str = "ok", t: float = 0.0) -> CheckResult:
    return CheckResult(check, reason == "ok", reason, "", {}, {}, t, 0.01)


def make_settings(**kw) -> Settings:
    base = dict(
        checks=CHECKS,
        fail_after=dict.fromkeys(CHECKS, 2),
        recover_after=dict.fromkeys(CHECKS, 3),
        backoff_initial=30.0,
        backoff_max=600.0,
        max_restarts_per_hour=6,
        tiers=(1, 2, 3),
        alternatives=2,
        reasons=TABLE,
    )
    base.update(kw)
    return Settings(**base)


# How the policy counts a result: the table it is handed, nothing else.
classify = make_settings().classify


class Sim:
    """Cycles of check results fed to ``decide``; every check runs every cycle."""

    def __init__(self, s: Settings | None = None, seed: int = 0, t: float = 10_000.0) -> None:
        self.s = s or make_settings()
        self.hist: dict[str, list[CheckResult]] = {c: [] for c in self.s.checks}
        self.mem = Memory()
        self.t = t
        self.rng = random.Random(seed)
        self.decisions: list[Decision] = []

    def cycle(self, dt: float = 10.0, **reasons: str) -> Decision:
        self.t += dt
        for c in self.s.checks:
            self.hist[c].append(res(c, reasons.get(c, "ok"), self.t))
        d = decide(self.hist, self.mem, self.s, self.t + 0.5, self.rng)
        self.mem = d.memory
        self.decisions.append(d)
        return d


def kinds(d: Decision) -> list[str]:
    return [a.kind for a in d.actions if not a.sweep]


# --- classification ----------------------------------------------------------------


@pytest.mark.parametrize(
    "check, reason, expected",
    [
        ("return_path", "no_return_traffic", UNSAFE),
        ("return_path", "handshake_only", UNSAFE),
        ("return_path", "timeout", UNSAFE),  # fail closed: the tunnel guard could not tell
        ("handshake", "stale", UNSAFE),
        ("handshake", "missing", UNSAFE),
        ("handshake", "error", UNSAFE),
        ("bind", "wrong_interface", UNSAFE),
        ("bind", "unbound", UNSAFE),
        ("bind", "no_address", UNSAFE),
        ("bind", "some_future_reason", UNSAFE),  # unknown bind reasons fail closed
        ("bind", "wrong_port", DEGRADED),
        ("bind", "unreachable", UNKNOWN),
        ("bind", "login", UNKNOWN),
        ("dns", "leak", UNSAFE),
        ("dns", "no_answer", DEGRADED),
        ("dns", "slow", DEGRADED),
        ("dns", "error", UNKNOWN),
        ("exit_ip", "not_airvpn", UNSAFE),
        ("exit_ip", "leak", UNSAFE),
        ("exit_ip", "unreachable", DEGRADED),
        ("exit_ip", "timeout", UNKNOWN),
        ("webui", "exposed", DEGRADED),  # reported, not acted on: see policy.py
        ("webui", "unreachable", DEGRADED),
        ("webui", "error", DEGRADED),
        ("dns", "ok", SAFE),
    ],
)
def test_classify(check, reason, expected):
    assert classify(check, reason) == expected


@pytest.mark.parametrize("check", names())
def test_a_reason_the_check_did_not_declare_fails_closed(check):
    assert classify(check, "some_future_reason") == UNSAFE


def test_a_check_that_is_not_registered_fails_closed():
    assert classify("no_such_check", "anything") == UNSAFE
    assert classify("no_such_check", "ok") == SAFE


def test_the_policy_reads_only_the_table_it_is_handed():
    # A made-up check the registry has never heard of: its table says "degraded",
    # so two failures in a row are reported only; without a table they trip.
    table = {"made_up": {"slowish": Reason("slowish", DEGRADED)}}
    s = make_settings(checks=("made_up",), fail_after={"made_up": 2}, reasons=table)
    hist = {"made_up": [res("made_up", "slowish", t) for t in (1.0, 2.0)]}
    assert decide(hist, Memory(), s, 3.0, random.Random(0)).state == "ok"
    bare = replace(s, reasons={})
    assert decide(hist, Memory(), bare, 3.0, random.Random(0)).state == "holding"


def test_only_unsafe_failures_are_remedied_by_a_restart():
    for spec in load_all().values():
        for r in spec.reasons:
            assert not r.restart or r.severity == UNSAFE, (spec.name, r)


# --- examples of each transition ----------------------------------------------------


def test_single_bad_cycle_does_nothing():
    sim = Sim()
    sim.cycle()
    d = sim.cycle(return_path="no_return_traffic")
    assert d.state == "ok" and d.actions == ()
    d = sim.cycle()
    assert d.state == "ok" and d.actions == ()


def test_ok_to_restarting_stops_torrents_and_restarts_tier1():
    sim = Sim()
    sim.cycle(return_path="no_return_traffic")
    d = sim.cycle(return_path="no_return_traffic")
    assert d.state == "restarting"
    assert kinds(d) == ["stop_torrents", "restart_tunnel"]
    restart = d.actions[1]
    assert restart.tier == 1 and "return_path no_return_traffic x2" in restart.reason
    assert d.memory.holding and d.memory.attempts == 1
    # The next restart waits for the back-off: between half and all of 30 s.
    assert 15.0 <= d.memory.next_restart - sim.t - 0.5 <= 30.0


def test_holding_sweeps_each_cycle_and_does_not_restart_before_backoff():
    sim = Sim()
    sim.cycle(return_path="no_return_traffic")
    sim.cycle(return_path="no_return_traffic")
    d = sim.cycle(dt=5, return_path="no_return_traffic")
    assert [a.kind for a in d.actions] == ["stop_torrents"] and d.actions[0].sweep
    assert d.state == "restarting"


def test_restart_needs_fresh_failures_after_the_previous_restart():
    sim = Sim(make_settings(backoff_initial=1.0, backoff_max=1.0))
    sim.cycle(return_path="no_return_traffic")
    sim.cycle(return_path="no_return_traffic")  # restart 1
    d = sim.cycle(dt=60, return_path="no_return_traffic")  # back-off over, 1 fresh failure
    assert "restart_tunnel" not in kinds(d)
    d = sim.cycle(dt=60, return_path="no_return_traffic")  # 2 fresh failures
    assert [a.tier for a in d.actions if a.kind == "restart_tunnel"] == [2]


def test_tiers_escalate_and_rotate_alternatives():
    s = make_settings(tiers=(1, 2, 3), alternatives=2)
    assert [tier_for(n, s) for n in range(1, 7)] == [(1, 0), (2, 0), (3, 0), (3, 1), (3, 0), (3, 1)]
    assert [tier_for(n, make_settings(tiers=(1,)))[0] for n in (1, 2, 3)] == [1, 1, 1]
    assert [tier_for(n, make_settings(tiers=(1, 3), alternatives=3)) for n in (1, 2, 3, 4, 5)] == [
        (1, 0),
        (3, 0),
        (3, 1),
        (3, 2),
        (3, 0),
    ]


def test_gives_up_at_the_cap_and_keeps_holding():
    sim = Sim(make_settings(backoff_initial=1.0, backoff_max=1.0, max_restarts_per_hour=3))
    states = []
    restarts = 0
    for _ in range(30):
        d = sim.cycle(return_path="no_return_traffic")
        restarts += kinds(d).count("restart_tunnel")
        states.append(d.state)
    assert restarts == 3
    assert states[-1] == "gave_up" and sim.mem.holding
    # Still gave_up (sticky for the incident) even once the hour has passed.
    d = sim.cycle(dt=4000, return_path="no_return_traffic")
    assert d.state == "gave_up" and "restart_tunnel" not in kinds(d)


def test_recovery_by_other_means_after_gave_up_resumes_and_resets():
    sim = Sim(make_settings(backoff_initial=1.0, backoff_max=1.0, max_restarts_per_hour=1))
    for _ in range(6):
        sim.cycle(return_path="no_return_traffic")
    assert sim.decisions[-1].state == "gave_up"
    d1, d2 = sim.cycle(), sim.cycle()
    assert d1.state == d2.state == "gave_up" and not kinds(d1) and not kinds(d2)
    d3 = sim.cycle()
    assert d3.state == "ok" and kinds(d3) == ["resume_torrents"]
    assert not sim.mem.gave_up and sim.mem.attempts == 0 and not sim.mem.holding
    # The restart times are kept: the hourly cap spans incidents.
    assert len(sim.mem.restarts) == 1


def test_holding_to_ok_after_recover_after_good_cycles():
    sim = Sim()
    sim.cycle(return_path="no_return_traffic")
    sim.cycle(return_path="no_return_traffic")
    d = sim.cycle()
    assert d.state == "holding" and d.needed == 3 and sim.mem.good_cycles == 1
    assert sim.cycle().state == "holding"
    d = sim.cycle()
    assert d.state == "ok" and kinds(d) == ["resume_torrents"]


def test_a_bad_cycle_during_recovery_starts_the_count_again():
    sim = Sim()
    sim.cycle(return_path="no_return_traffic")
    sim.cycle(return_path="no_return_traffic")
    sim.cycle()
    sim.cycle()
    sim.cycle(dns="error")  # unknown: not good
    assert sim.mem.good_cycles == 0
    for _ in range(2):
        assert sim.cycle().state == "holding"
    assert sim.cycle().state == "ok"


def test_recover_after_of_the_culprit_decides():
    s = make_settings(recover_after={**dict.fromkeys(CHECKS, 3), "dns": 5})
    sim = Sim(s)
    sim.cycle(dns="leak")
    d = sim.cycle(dns="leak")
    assert d.state == "holding" and "restart_tunnel" not in kinds(d)  # a leak is not a tunnel fault
    for _ in range(4):
        assert sim.cycle().state == "holding"
    assert sim.cycle().state == "ok"


def test_degraded_is_reported_not_acted_on():
    sim = Sim()
    for _ in range(5):
        d = sim.cycle(dns="slow", webui="exposed", exit_ip="unreachable", bind="wrong_port")
        assert d.state == "ok"
        assert "stop_torrents" not in kinds(d) and "restart_tunnel" not in kinds(d)
    assert "dns slow (degraded)" in d.reason and "webui exposed" in d.reason


def test_exit_ip_not_airvpn_holds_without_restart():
    sim = Sim()
    sim.cycle(exit_ip="not_airvpn")
    d = sim.cycle(exit_ip="not_airvpn")
    assert d.state == "holding" and kinds(d) == ["stop_torrents"]


def test_tunnel_down_through_bind_no_address_restarts():
    sim = Sim()
    sim.cycle(bind="no_address")
    d = sim.cycle(bind="no_address")
    assert d.state == "restarting" and kinds(d) == ["stop_torrents", "restart_tunnel"]


def test_stop_disabled_still_restarts_and_never_resumes():
    sim = Sim(make_settings(stop_torrents=False))
    sim.cycle(handshake="stale")
    d = sim.cycle(handshake="stale")
    assert kinds(d) == ["restart_tunnel"] and d.state == "restarting"
    for _ in range(3):
        d = sim.cycle()
    assert d.state == "ok" and "resume_torrents" not in kinds(d)


# --- rebind ------------------------------------------------------------------------


def test_rebind_on_wrong_interface_with_the_stop():
    sim = Sim()
    sim.cycle(bind="wrong_interface")
    d = sim.cycle(bind="wrong_interface")
    assert kinds(d) == ["stop_torrents", "rebind"] and d.state == "holding"
    # Not again right away, even if it still fails...
    sim.cycle(bind="wrong_interface")
    d = sim.cycle(bind="wrong_interface")
    assert "rebind" not in kinds(d)
    # ...but again after backoff_max.
    d = sim.cycle(dt=600, bind="wrong_interface")
    assert "rebind" in kinds(d)


def test_rebind_after_a_tunnel_restart_when_the_port_is_lost():
    sim = Sim(make_settings(backoff_initial=1.0, backoff_max=1000.0))
    sim.cycle(bind="wrong_port")
    d = sim.cycle(bind="wrong_port")
    assert kinds(d) == ["rebind"] and d.state == "ok"  # wrong_port is degraded: no stop
    sim.cycle(return_path="no_return_traffic")
    d = sim.cycle(return_path="no_return_traffic")
    assert "restart_tunnel" in kinds(d)
    sim.cycle(bind="wrong_port")
    d = sim.cycle(bind="wrong_port")  # two failures since the restart
    assert "rebind" in kinds(d)


def test_rebind_disabled():
    sim = Sim(make_settings(rebind=False))
    for _ in range(4):
        assert "rebind" not in kinds(sim.cycle(bind="wrong_interface"))


# --- fail closed -------------------------------------------------------------------


def test_tunnel_check_timeouts_start_a_hold():
    sim = Sim()
    sim.cycle(return_path="timeout")
    d = sim.cycle(return_path="timeout")
    assert "stop_torrents" in kinds(d)


def test_a_bind_timeout_is_a_slow_webui_and_never_starts_a_hold_but_its_error_does():
    # A hung or busy qBittorrent (SIGSTOP, a long recheck) makes bind's reads outlast
    # the check's timeout: no tunnel fault, so no hold (it blocks a resume, as
    # `unreachable` does). Its own error (a bug in it) still fails closed.
    from qbt_vpn_watchdog.checks import classify

    assert classify("bind", "timeout") == UNKNOWN and classify("bind", "error") == UNSAFE
    assert classify("return_path", "timeout") == UNSAFE  # a tunnel guard's own reads
    sim = Sim()
    for _ in range(4):
        assert sim.cycle(bind="timeout").actions == ()
    sim.cycle(bind="error")
    assert "stop_torrents" in kinds(sim.cycle(bind="error"))


def test_qbittorrent_unreachable_never_starts_a_hold_but_blocks_resume():
    sim = Sim()
    for _ in range(4):
        assert sim.cycle(bind="unreachable").actions == ()
    sim.cycle(return_path="no_return_traffic")
    sim.cycle(return_path="no_return_traffic")
    for _ in range(6):
        d = sim.cycle(bind="unreachable")
        assert d.state == "holding" and "resume_torrents" not in kinds(d)
    for _ in range(2):
        sim.cycle()
    assert kinds(sim.cycle()) == ["resume_torrents"]


def test_checks_erroring_keep_torrents_stopped():
    sim = Sim()
    sim.cycle(handshake="stale")
    sim.cycle(handshake="stale")
    for _ in range(6):
        d = sim.cycle(dns="error", exit_ip="timeout")
        assert d.state != "ok" and "resume_torrents" not in kinds(d)


def test_a_check_that_never_reported_blocks_resume():
    s = make_settings()
    hist = {c: [res(c, "ok", t) for t in (1, 2, 3, 4)] for c in CHECKS if c != "exit_ip"}
    mem = Memory(holding=True, stopped=True, since=0.0)  # e.g. tagged torrents found at start
    d = decide(hist, mem, s, 5.0, random.Random(0))
    assert d.state == "holding" and "resume_torrents" not in kinds(d)
    hist["exit_ip"] = [res("exit_ip", "ok", 4.5)]
    mem = replace(d.memory, good_cycles=10)
    d = decide(hist, mem, s, 5.0, random.Random(0))
    assert kinds(d) == ["resume_torrents"]


def test_after_a_watchdog_restart_the_largest_recover_after_applies():
    s = make_settings(recover_after={**dict.fromkeys(CHECKS, 3), "webui": 4})
    sim = Sim(s)
    sim.mem = Memory(holding=True, stopped=True, since=sim.t)  # culprits unknown
    assert [sim.cycle().state for _ in range(4)] == ["holding"] * 3 + ["ok"]


# --- back-off ----------------------------------------------------------------------


@given(st.integers(1, 40), st.floats(0.5, 100), st.floats(1, 5000), st.integers(0, 2**32))
def test_backoff_is_jittered_within_half_and_whole_of_the_capped_exponential(a, initial, mx, seed):
    mx = max(mx, initial)
    d = backoff_delay(a, initial, mx, random.Random(seed))
    ceiling = min(initial * 2 ** (a - 1), mx)
    assert ceiling / 2 - 1e-9 <= d <= ceiling + 1e-9


def test_backoff_grows():
    rng = random.Random(1)
    ceilings = [max(backoff_delay(n, 10, 10_000, rng) for _ in range(50)) for n in (1, 2, 3, 4)]
    assert ceilings == sorted(ceilings) and ceilings[-1] > 60


# --- properties ----------------------------------------------------------------------

# Every reason each check declares, ok weighted so that good stretches happen.
REASONS = {
    c: ["ok"] * max(3, len(s.all_reasons) // 2) + list(s.all_reasons) for c, s in load_all().items()
}


def cycles(min_size: int = 1, max_size: int = 60):
    one = st.fixed_dictionaries({c: st.sampled_from(REASONS[c]) for c in CHECKS})
    dt = st.floats(1.0, 400.0)
    return st.lists(st.tuples(dt, one), min_size=min_size, max_size=max_size)


settings_strategy = st.builds(
    make_settings,
    fail_after=st.fixed_dictionaries({c: st.integers(1, 4) for c in CHECKS}),
    recover_after=st.fixed_dictionaries({c: st.integers(1, 4) for c in CHECKS}),
    backoff_initial=st.floats(1.0, 120.0),
    backoff_max=st.floats(1.0, 1200.0),
    max_restarts_per_hour=st.integers(1, 8),
    tiers=st.sampled_from([(1,), (1, 2), (1, 3), (1, 2, 3)]),
    alternatives=st.integers(1, 3),
    stop_torrents=st.booleans(),
)


@given(settings_strategy, cycles(max_size=120), st.integers(0, 2**32))
@settings(max_examples=300, deadline=None)
def test_restarts_in_any_hour_never_exceed_the_cap(s, seq, seed):
    sim = Sim(s, seed)
    times = []
    for dt, reasons in seq:
        d = sim.cycle(dt, **reasons)
        times += [sim.t + 0.5 for a in d.actions if a.kind == "restart_tunnel"]
    for i, t in enumerate(times):
        in_window = [u for u in times[i:] if u - t < 3600]
        assert len(in_window) <= s.max_restarts_per_hour
    # ...and within an incident they never come closer than half the initial back-off.
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g >= s.backoff_initial / 2 - 1e-6 for g in gaps)


@given(settings_strategy, cycles(max_size=80), st.integers(0, 2**32))
@settings(max_examples=300, deadline=None)
def test_always_stops_once_an_unsafe_check_failed_fail_after_times(s, seq, seed):
    s = replace(s, stop_torrents=True)
    sim = Sim(s, seed)
    for dt, reasons in seq:
        was_holding = sim.mem.holding
        d = sim.cycle(dt, **reasons)
        must = [c for c in CHECKS if tripped(sim.hist[c], s.fail_n(c), s)]
        if must:
            assert sim.mem.holding and d.state != "ok"
            assert any(a.kind == "stop_torrents" for a in d.actions)
            if not was_holding:
                assert any(a.kind == "stop_torrents" and not a.sweep for a in d.actions)
            assert not any(a.kind == "resume_torrents" for a in d.actions)


def _isolated(seq):
    """No check fails two cycles in a row: every bad cycle is a single one."""
    prev = dict.fromkeys(CHECKS, "ok")
    out = []
    for dt, reasons in seq:
        fixed = {c: ("ok" if prev[c] != "ok" else r) for c, r in reasons.items()}
        out.append((dt, fixed))
        prev = fixed
    return out


@given(settings_strategy, cycles(max_size=80), st.integers(0, 2**32))
@settings(max_examples=300, deadline=None)
def test_never_acts_on_a_single_bad_cycle_when_fail_after_is_above_one(s, seq, seed):
    s = replace(s, fail_after={c: max(2, n) for c, n in s.fail_after.items()})
    sim = Sim(s, seed)
    for dt, reasons in _isolated(seq):
        d = sim.cycle(dt, **reasons)
        assert d.actions == () and d.state == "ok"


@given(settings_strategy, cycles(max_size=80), st.integers(0, 2**32))
@settings(max_examples=200, deadline=None)
def test_resume_only_after_recover_after_good_cycles_with_every_check_safe(s, seq, seed):
    sim = Sim(s, seed)
    for dt, reasons in seq:
        d = sim.cycle(dt, **reasons)
        if any(a.kind == "resume_torrents" for a in d.actions):
            window = min(s.recover_after.values())
            for c in CHECKS:
                last = sim.hist[c][-window:]
                assert all(classify(c, r.reason) in (SAFE, DEGRADED) for r in last)


# --- the policy with a model executor ------------------------------------------------


class ModelQbt:
    """qBittorrent as far as remediation can tell: paused flags and tags."""

    def __init__(self, n: int) -> None:
        self.paused = {f"t{i}": False for i in range(n)}
        self.tags: dict[str, set[str]] = {h: set() for h in self.paused}
        self.calls: list[str] = []
        self.started_by_watchdog: list[str] = []
        self.down = False
        self.port = 51413  # where its listening socket is (see ModelLinks)

    def _up(self):
        if self.down:
            from qbt_vpn_watchdog.sources import SourceError

            raise SourceError("connection refused", kind="unreachable")

    def stop_active(self, tag):
        self._up()
        self.calls.append("stop_active")
        hit = [h for h, p in self.paused.items() if not p]
        for h in hit:
            self.paused[h] = True
            self.tags[h].add(tag)
        return hit

    def start_tagged(self, tag):
        self._up()
        self.calls.append("start_tagged")
        hit = [h for h in self.paused if tag in self.tags[h]]
        for h in hit:
            self.paused[h] = False
            self.tags[h].discard(tag)
        self.started_by_watchdog += hit
        return hit

    def held(self, tag):
        self._up()
        return [h for h in self.paused if tag in self.tags[h]]

    def set_binding(self, interface, port):
        self._up()
        self.calls.append("set_binding")
        self.port = port

    def reannounce(self):
        self._up()
        self.calls.append("reannounce")

    def state(self):
        self._up()
        torrents = tuple(
            TorrentBrief(h, h, "pausedDL" if p else "downloading", tuple(self.tags[h]))
            for h, p in self.paused.items()
        )
        return QbtState(
            "v4.5.2", "2.8.19", "wg0", "", self.port, "*", 8080, "connected", 0, 0, 0, 0, 0, (),
            torrents,
        )  # fmt: skip


class ModelWg:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def read(self):
        peer = WgPeer("A" * 43 + "=", "192.0.2.1:1637", 1.0, 92, 9000, ("0.0.0.0/0",))
        return WgDevice("wg0", "uapi", 51820, (peer,))

    def set_endpoint(self, key, endpoint):
        self.calls.append(f"set_endpoint {endpoint}")


class ModelLinks:
    """The namespace: wg0 (index 5), and a socket wherever qBittorrent last bound its port."""

    def __init__(self, qbt: ModelQbt) -> None:
        self.qbt = qbt

    def link(self, name):
        return (
            LinkState("wg0", 5, True, 1320, ("10.64.1.2/32",), 0, 0, 0, 0)
            if name == "wg0"
            else None
        )

    def tcp_listeners(self, port):
        return (Listener("10.64.1.2", port, 5),) if port == self.qbt.port else ()


class Srcs:
    def __init__(self, qbt, wg, links=None) -> None:
        self.qbittorrent = qbt
        self.wireguard = wg
        self.links = links or ModelLinks(qbt)


def lab_config(mode: str = "enforce") -> config_mod.Config:
    return config_mod.parse(
        f"""
[watchdog]
mode = "{mode}"
[remediation]
restart_command = ["/bin/true"]
alternative_endpoints = ["192.0.2.2:1637"]
restart_backoff_initial = 1.0
restart_backoff_max = 4.0
max_restarts_per_hour = 3
"""
    )


user_event = st.one_of(
    st.none(), st.tuples(st.sampled_from(["pause", "resume"]), st.integers(0, 4))
)


@given(
    cycles(max_size=50),
    st.lists(user_event, min_size=50, max_size=50),
    st.lists(st.booleans(), min_size=50, max_size=50),
    st.integers(0, 2**32),
)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_never_resumes_a_torrent_it_did_not_stop(seq, events, qbt_down, seed):
    qbt, wg = ModelQbt(5), ModelWg()
    commands: list[list[str]] = []
    rem = Remediator(
        lab_config(),
        Srcs(qbt, wg),
        rng=random.Random(seed),
        specs=load_all(),
        run_command=lambda argv, timeout: commands.append(list(argv)) or "",
        resolve=lambda ep: ep,
    )
    hist: dict[str, list[CheckResult]] = {c: [] for c in CHECKS}
    t = 1000.0
    user_paused: set[str] = set()
    for i, (dt, reasons) in enumerate(seq):
        ev = events[i]
        if ev:
            op, k = ev
            h = f"t{k}"
            tagged = "watchdog-stopped" in qbt.tags[h]
            if op == "pause" and not qbt.paused[h]:
                qbt.paused[h] = True
                user_paused.add(h)
            elif op == "resume" and h in user_paused and not tagged:
                qbt.paused[h] = False
                user_paused.discard(h)
        qbt.down = qbt_down[i] and i % 3 == 0
        t += dt
        results = {c: res(c, r, t) for c, r in reasons.items()}
        for c, r in results.items():
            hist[c].append(r)
        before = len(qbt.started_by_watchdog)
        view = rem.step(hist, t + 0.1)
        newly = qbt.started_by_watchdog[before:]
        assert not set(newly) & user_paused, "resumed a torrent the user had stopped"
        tagged = [h for h in qbt.tags if "watchdog-stopped" in qbt.tags[h]]
        assert view.held_stopped == len(tagged)
        # Fail closed: while something is tagged, the view never says ok.
        if tagged:
            assert view.state != "ok"


@given(cycles(max_size=40), st.integers(0, 2**32))
@settings(max_examples=100, deadline=None)
def test_observe_mode_never_has_side_effects(seq, seed):
    qbt, wg = ModelQbt(3), ModelWg()
    commands: list[list[str]] = []
    rem = Remediator(
        lab_config("observe"),
        Srcs(qbt, wg),
        rng=random.Random(seed),
        specs=load_all(),
        run_command=lambda argv, timeout: commands.append(list(argv)) or "",
        resolve=lambda ep: ep,
    )
    hist: dict[str, list[CheckResult]] = {c: [] for c in CHECKS}
    t = 0.0
    for dt, reasons in seq:
        t += dt
        results = {c: res(c, r, t) for c, r in reasons.items()}
        for c, r in results.items():
            hist[c].append(r)
        view = rem.step(hist, t)
        assert view.observe_only
        assert view.held_stopped == 0
        assert sum(view.actions_total.values()) == 0
    assert qbt.calls == [] and wg.calls == [] and commands == []
    assert not any(qbt.paused.values())
