"""Remediation policy: a pure function from recent check results to actions.

``decide(histories, memory, settings, now, rng)`` looks only at its arguments
and returns a ``Decision``: the actions to take this cycle, the state to
report, and the next ``Memory``. ``qbt_vpn_watchdog.actions.Remediator`` performs the
actions and feeds failures back into the memory. Nothing here does I/O, so the
rules below are tested exhaustively (tests/core/test_policy.py).

How a check result counts is declared by each check, next to the reasons
themselves (``register(..., reasons=...)`` in checks/*.py; the README's check
table shows them all). The policy is handed that table in its ``Settings``
(``Settings.from_config(cfg, specs)``: {check: {reason: Reason}}) and imports
nothing from checks/:

* **unsafe**: torrent traffic may leak or go nowhere (e.g. every failure of
  ``return_path`` and ``handshake``, a DNS or exit-IP leak). The checks that
  guard the tunnel count their own ``error``/``timeout`` as unsafe too (fail
  closed), and so does a reason no check declared.
* **unknown**: the watchdog cannot tell (qBittorrent unreachable, a broken
  probe). Unknown never *starts* a hold, but it blocks resuming one.
* **degraded**: reported only (DNS slow through a working tunnel, the
  exit-IP endpoint down, every ``webui`` failure).

A reason also says whether a tunnel restart (``restart``) or a rebind
(``rebind``) is its remedy.

Hysteresis: a check *trips* when its last ``fail_after`` results are all
unsafe; a hold is released after ``recover_after`` consecutive cycles in which
every enabled check's latest result was ok or degraded (``recover_after`` of
the checks that tripped, or the largest one when the culprits are unknown
after a restart of the watchdog).

Never flap: tunnel restarts happen only while a tunnel check is tripped by
results newer than the last restart, back off exponentially with jitter
(``backoff.Backoff``, the project's one back-off: the ceiling doubles from
``restart_backoff_initial`` to ``restart_backoff_max``, the injected ``rng``
picks between half of it and all of it, so two restarts are never closer than
``restart_backoff_initial / 2``), and at most ``max_restarts_per_hour`` in any
3600 s window. Past the cap the state is ``gave_up`` for the rest of the
incident: no more restarts, torrents stay held, checks go on and a recovery
by other means still releases the hold.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from qbt_vpn_watchdog.backoff import Backoff
from qbt_vpn_watchdog.results import (
    DEGRADED,
    OK,
    SAFE,
    UNKNOWN,
    UNSAFE,
    CheckResult,
    Reason,
    trailing,
)

if TYPE_CHECKING:
    from qbt_vpn_watchdog.config import Config

__all__ = ["DEGRADED", "SAFE", "UNKNOWN", "UNSAFE", "decide"]

HOUR = 3600.0

# {check: {reason: Reason}}: what each failure of each check means.
ReasonTable = Mapping[str, Mapping[str, Reason]]


class DeclaresReasons(Protocol):
    """What the policy needs of a check's spec (``checks.CheckSpec`` is one)."""

    @property
    def reason_table(self) -> Mapping[str, Reason]: ...


# --- inputs and outputs --------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The slice of the config the policy needs (built with ``from_config``)."""

    checks: tuple[str, ...]  # enabled checks: every one must report before a cycle is good
    fail_after: Mapping[str, int] = field(default_factory=dict)  # default 2
    recover_after: Mapping[str, int] = field(default_factory=dict)  # default 3
    stop_torrents: bool = True
    backoff_initial: float = 30.0
    backoff_max: float = 600.0
    max_restarts_per_hour: int = 6
    tiers: tuple[int, ...] = (1,)  # the restart tiers configured, in order
    alternatives: int = 0  # how many alternative endpoints tier 3 rotates through
    rebind: bool = True
    # What each check's reasons mean; a check or reason not in it counts as unsafe.
    reasons: ReasonTable = field(default_factory=dict)
    # namespace.built_by_vpn_netns: a restart re-installs the kill switch (Reason.ours_only)
    ours: bool = True

    @classmethod
    def from_config(cls, cfg: Config, specs: Mapping[str, DeclaresReasons]) -> Settings:
        r = cfg.remediation
        checks = tuple(cfg.enabled_checks())
        tiers = [1]
        if r.restart_command or r.restart_unit:
            tiers.append(2)
        if r.alternative_endpoints:
            tiers.append(3)
        return cls(
            checks=checks,
            fail_after={c: cfg.check(c).fail_after for c in checks},
            recover_after={c: cfg.check(c).recover_after for c in checks},
            stop_torrents=r.stop_torrents,
            backoff_initial=r.restart_backoff_initial,
            backoff_max=max(r.restart_backoff_max, r.restart_backoff_initial),
            max_restarts_per_hour=r.max_restarts_per_hour,
            tiers=tuple(tiers),
            alternatives=len(r.alternative_endpoints),
            rebind=r.rebind,
            reasons={name: spec.reason_table for name, spec in specs.items()},
            ours=cfg.namespace.built_by_vpn_netns,
        )

    def fail_n(self, check: str) -> int:
        return self.fail_after.get(check, 2)

    def recover_n(self, check: str) -> int:
        return self.recover_after.get(check, 3)

    def reason(self, check: str, reason: str) -> Reason:
        """What ``reason`` means for ``check``: fails closed (unsafe) when the table does not say."""
        got = self.reasons.get(check, {}).get(reason)
        return got if got is not None else Reason(reason, UNSAFE)

    def classify(self, check: str, reason: str) -> str:
        """SAFE, DEGRADED, UNKNOWN or UNSAFE for one result."""
        return SAFE if reason == OK else self.reason(check, reason).severity

    def unsafe(self, r: CheckResult) -> bool:
        return self.classify(r.check, r.reason) == UNSAFE

    def restart_helps(self, check: str, reason: str) -> bool:
        """Whether a tunnel restart is the remedy for this result (the check declares it;
        ``Reason.ours_only``: only on a namespace our vpn-netns.sh builds, ``ours``)."""
        r = self.reason(check, reason)
        return r.restart and (self.ours or not r.ours_only)

    def rebind_helps(self, check: str, reason: str) -> bool:
        """Whether setting qBittorrent's interface and port again is the remedy (declared too)."""
        return self.reason(check, reason).rebind


@dataclass(frozen=True)
class Memory:
    """What remediation remembers between cycles."""

    holding: bool = False  # an incident is open: torrents are held stopped (or would be)
    stopped: bool = False  # the stop went through (else it is retried every cycle)
    since: float | None = None  # when the incident opened
    culprits: frozenset[str] = frozenset()  # checks that tripped; empty = unknown
    good_cycles: int = 0  # consecutive cycles with every check ok or degraded
    attempts: int = 0  # tunnel restarts in this incident
    last_restart: float | None = None
    next_restart: float = 0.0  # no restart before this time (back-off)
    restarts: tuple[float, ...] = ()  # restart times within the last hour, across incidents
    gave_up: bool = False
    last_rebind: float | None = None


@dataclass(frozen=True)
class Action:
    kind: str  # "stop_torrents" | "restart_tunnel" | "rebind" | "resume_torrents"
    reason: str  # one line, for the log
    tier: int = 0  # restart_tunnel: 1 endpoint, 2 unit/command, 3 alternative endpoint
    endpoint_index: int = 0  # tier 3: which alternative endpoint
    sweep: bool = False  # stop_torrents while already holding: catch torrents added since


@dataclass(frozen=True)
class Decision:
    state: str  # one of results.REMEDIATION_STATES
    actions: tuple[Action, ...]
    memory: Memory
    reason: str  # why the state is what it is, one line
    needed: int = 0  # good cycles needed to resume (when holding)


# --- the pieces ------------------------------------------------------------------


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Seconds to wait after restart number ``attempt`` (1-based) before the next.

    ``Backoff``: min(initial * 2^(attempt-1), maximum), with "equal jitter"
    between half of that and all of it, so uncoordinated restarts spread out
    but never come faster than initial/2.
    """
    return Backoff(initial, maximum, rng).delay(attempt)


def tier_for(attempt: int, settings: Settings) -> tuple[int, int]:
    """(tier, alternative endpoint index) for restart number ``attempt`` (1-based).

    Each restart escalates one tier until the last configured one, which then
    repeats; tier 3 rotates through the alternative endpoints.
    """
    tiers = settings.tiers or (1,)
    i = min(attempt - 1, len(tiers) - 1)
    tier = tiers[i]
    index = 0
    if tier == 3 and settings.alternatives:
        index = (attempt - 1 - tiers.index(3)) % settings.alternatives
    return tier, index


def tripped(
    history: Sequence[CheckResult], fail_after: int, settings: Settings, after: float | None = None
) -> bool:
    """The last ``fail_after`` results (newer than ``after``) are all unsafe."""
    return trailing(history, settings.unsafe, after) >= fail_after


def _describe(check: str, history: Sequence[CheckResult]) -> str:
    r = history[-1]
    n = trailing(history, lambda x: x.reason == r.reason)
    return f"{check} {r.reason} x{n}"


def _prune(times: tuple[float, ...], now: float) -> tuple[float, ...]:
    return tuple(t for t in times if now - t < HOUR)


# --- the decision --------------------------------------------------------------


def decide(
    histories: Mapping[str, Sequence[CheckResult]],
    memory: Memory,
    settings: Settings,
    now: float,
    rng: random.Random,
) -> Decision:
    """This cycle's actions, state and next memory. Pure: no I/O, no clock."""
    hist = {c: histories.get(c, ()) for c in settings.checks}
    latest = {c: h[-1] for c, h in hist.items() if h}
    sev = {c: settings.classify(c, r.reason) for c, r in latest.items()}
    trips = {c for c, h in hist.items() if h and tripped(h, settings.fail_n(c), settings)}
    # A cycle is good only when every enabled check has spoken and none is unsafe
    # or unknown: a check that never reported cannot vouch for anything.
    good = all(sev.get(c) in (SAFE, DEGRADED) for c in settings.checks)
    mem = replace(memory, restarts=_prune(memory.restarts, now))
    actions: list[Action] = []
    why_trip = "; ".join(_describe(c, hist[c]) for c in sorted(trips))

    if trips:
        if not mem.holding:
            mem = replace(mem, holding=True, stopped=False, since=now, culprits=frozenset(trips))
        else:
            mem = replace(mem, culprits=mem.culprits | trips)
        mem = replace(mem, good_cycles=0)
    elif mem.holding:
        mem = replace(mem, good_cycles=mem.good_cycles + 1 if good else 0)

    needed = 0
    if mem.holding:
        pool = mem.culprits or frozenset(settings.checks)
        needed = max((settings.recover_n(c) for c in pool), default=1)

    # Recovery: enough good cycles in a row releases the hold and resets the incident.
    if mem.holding and not trips and mem.good_cycles >= needed:
        if settings.stop_torrents:
            actions.append(
                Action("resume_torrents", f"all checks good for {mem.good_cycles} cycles")
            )
        mem = Memory(
            restarts=mem.restarts, next_restart=mem.next_restart, last_rebind=mem.last_rebind
        )
        actions.extend(_rebind(hist, mem, settings, now))
        return Decision(
            "ok", tuple(actions), replace(mem, last_rebind=_rebound(actions, mem, now)), "recovered"
        )

    if not mem.holding:
        actions.extend(_rebind(hist, mem, settings, now))
        mem = replace(mem, last_rebind=_rebound(actions, mem, now))
        notes = []
        for c in sorted(c for c, s in sev.items() if s != SAFE):
            if sev[c] == UNSAFE:
                n = trailing(hist[c], settings.unsafe)
                notes.append(f"{c} {latest[c].reason} ({n}/{settings.fail_n(c)} before acting)")
            else:
                notes.append(f"{c} {latest[c].reason} ({sev[c]})")
        reason = "all checks ok" if not notes else "; ".join(notes)
        return Decision("ok", tuple(actions), mem, reason)

    # Holding. Stop torrents on the first cycle (and retry until it went
    # through); later cycles sweep for torrents added meanwhile.
    if settings.stop_torrents:
        if not mem.stopped:
            actions.append(Action("stop_torrents", f"unsafe: {why_trip}"))
        else:
            actions.append(Action("stop_torrents", "keep holding", sweep=True))
        mem = replace(mem, stopped=True)

    tunnel_bad = sorted(c for c in trips if settings.restart_helps(c, latest[c].reason))
    if tunnel_bad and not mem.gave_up:
        fresh = [
            c
            for c in tunnel_bad
            if tripped(hist[c], settings.fail_n(c), settings, mem.last_restart)
        ]
        if fresh and now >= mem.next_restart:
            if len(mem.restarts) >= settings.max_restarts_per_hour:
                mem = replace(mem, gave_up=True)
            else:
                attempt = mem.attempts + 1
                tier, index = tier_for(attempt, settings)
                why = "; ".join(_describe(c, hist[c]) for c in fresh)
                actions.append(Action("restart_tunnel", f"attempt {attempt}: {why}", tier, index))
                delay = backoff_delay(attempt, settings.backoff_initial, settings.backoff_max, rng)
                mem = replace(
                    mem,
                    attempts=attempt,
                    last_restart=now,
                    next_restart=now + delay,
                    restarts=(*mem.restarts, now),
                )

    actions.extend(_rebind(hist, mem, settings, now))
    mem = replace(mem, last_rebind=_rebound(actions, mem, now))

    if mem.gave_up:
        state = "gave_up"
        reason = f"gave up restarting the tunnel ({len(mem.restarts)} restarts in the last hour)"
        if trips:
            reason += f"; unsafe: {why_trip}"
    elif tunnel_bad:
        state = "restarting"
        reason = f"tunnel unsafe: {why_trip}"
    else:
        state = "holding"
        reason = (
            f"unsafe: {why_trip}"
            if trips
            else f"recovering ({mem.good_cycles}/{needed} good cycles)"
        )
    return Decision(state, tuple(actions), mem, reason, needed)


def _rebind(
    hist: Mapping[str, Sequence[CheckResult]], mem: Memory, settings: Settings, now: float
) -> list[Action]:
    """Set qBittorrent's interface and port back when a check says they are wrong
    (``bind``: the reasons it declares ``rebind=True``).

    At most once per ``backoff_max`` seconds, and again after every tunnel
    restart (an interface flap is what loses the binding); each time only when
    the check failed so ``fail_after`` times since the last restart or rebind.
    """
    if not settings.rebind:
        return []
    last = mem.last_rebind
    restarted_since = mem.last_restart is not None and (last is None or mem.last_restart > last)
    if last is not None and not restarted_since and now - last < settings.backoff_max:
        return []
    after = max((t for t in (last, mem.last_restart) if t is not None), default=None)
    for check in sorted(hist):
        h = hist[check]
        if not h or not settings.rebind_helps(check, h[-1].reason):
            continue
        n = trailing(h, lambda r: settings.rebind_helps(r.check, r.reason), after)
        if n >= settings.fail_n(check):
            return [Action("rebind", f"{check} {h[-1].reason} x{n}")]
    return []


def _rebound(actions: Sequence[Action], mem: Memory, now: float) -> float | None:
    return now if any(a.kind == "rebind" for a in actions) else mem.last_rebind
