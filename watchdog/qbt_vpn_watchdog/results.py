"""The one result type every check returns.

A check answers "is this part safe and working" with ``ok``, a ``reason`` from
the check's fixed set (so metrics and alerts can match on it), a one-line
``detail`` for humans (never a secret), numeric ``observations`` and string
``facts`` for what is shown (metrics, ``_info`` labels, ``check --json``), and
optionally its own typed ``state`` for its next run (read back from its
history; never shown, e.g. return_path's counter sample and whether its
verdict is still pending).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from qbt_vpn_watchdog import __version__

OK = "ok"
# Reasons every check can have, filled in by the runner, never by a check.
ERROR = "error"  # the check raised: a bug or an unexpected answer
TIMEOUT = "timeout"  # the check did not finish within its timeout
# A reading failed because the watchdog itself ran out of something (open
# files, memory, threads): it could not look, which says nothing about the
# tunnel. Always unknown, whatever the check (sources.local_resource).
LOCAL_RESOURCE = "local_resource"
COMMON_REASONS = (ERROR, TIMEOUT, LOCAL_RESOURCE)

# How remediation counts a result (each check declares it per reason; see
# qbt_vpn_watchdog.checks.registry.Reason and qbt_vpn_watchdog.policy).
SAFE = "ok"
DEGRADED = "degraded"  # reported only
UNKNOWN = "unknown"  # the watchdog cannot tell: never starts a hold, blocks resuming one
UNSAFE = "unsafe"  # torrent traffic may leak or go nowhere: acted on
SEVERITIES = (SAFE, DEGRADED, UNKNOWN, UNSAFE)


@dataclass(frozen=True)
class Reason:
    """A failure reason and what it means to remediation.

    severity: UNSAFE (torrent traffic may leak or go nowhere: acted on),
    UNKNOWN (the watchdog cannot tell: never starts a hold, blocks resuming
    one) or DEGRADED (reported only). ``restart``: a tunnel restart is the
    remedy. ``rebind``: setting qBittorrent's interface and port again is.
    ``ours_only``: the restart is the remedy only where this project's
    vpn-netns.sh builds the namespace (``namespace.built_by_vpn_netns``): its
    restart-tunnel re-installs the kill switch and turns IPv6 off; on a
    namespace someone else's module built, a restart changes nothing, so the
    torrents are only held.
    """

    name: str
    severity: str
    restart: bool = False
    rebind: bool = False
    ours_only: bool = False

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES or self.severity == SAFE:
            raise ValueError(f"reason {self.name!r}: severity {self.severity!r} is not a failure")


def _frozen(m: Mapping | None) -> Mapping:
    return MappingProxyType(dict(m or {}))


@dataclass(frozen=True)
class Outcome:
    """What a check function returns; the runner adds name, timing and duration."""

    ok: bool
    reason: str = OK
    detail: str = ""
    observations: Mapping[str, float] = field(default_factory=dict)
    facts: Mapping[str, str] = field(default_factory=dict)
    state: Any = None  # the check's own (frozen) state for its next run; not shown
    # A verdict for now only, awaiting evidence (return_path's probe went
    # unanswered, its window is not covered yet): the loop runs the check
    # again within seconds instead of an interval later.
    provisional: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "observations", _frozen(self.observations))
        object.__setattr__(self, "facts", _frozen(self.facts))
        if self.ok != (self.reason == OK):
            raise ValueError(f"ok={self.ok} does not go with reason {self.reason!r}")

    @classmethod
    def passed(cls, detail: str = "", **kw) -> Outcome:
        return cls(True, OK, detail, **kw)

    @classmethod
    def failed(cls, reason: str, detail: str, **kw) -> Outcome:
        return cls(False, reason, detail, **kw)


@dataclass(frozen=True)
class CheckResult:
    check: str
    ok: bool
    reason: str
    detail: str
    observations: Mapping[str, float]
    facts: Mapping[str, str]
    started: float  # unix time the check started
    duration: float  # seconds
    state: Any = None  # Outcome.state
    provisional: bool = False  # Outcome.provisional

    @classmethod
    def from_outcome(cls, check: str, o: Outcome, started: float, duration: float) -> CheckResult:
        return cls(
            check, o.ok, o.reason, o.detail, o.observations, o.facts, started, duration, o.state,
            o.provisional,
        )  # fmt: skip


# The remediation states, in the order a bad night goes through them.
REMEDIATION_STATES = ("ok", "holding", "restarting", "gave_up")


@dataclass(frozen=True)
class RemediationView:
    """What remediation reports after a cycle, for metrics, STATUS= and logs."""

    state: str = "ok"  # one of REMEDIATION_STATES
    observe_only: bool = False  # mode = "observe": actions are only reported
    held_stopped: int = 0  # torrents we stopped and hold (tagged)
    actions_total: Mapping[str, int] = field(default_factory=dict)  # action -> attempts since start
    failures_total: Mapping[str, int] = field(default_factory=dict)
    summary: str = ""  # one line, e.g. "holding 3 torrents: return_path failing for 2 cycles"


@dataclass(frozen=True)
class Snapshot:
    """What the loop knew after its last cycle; the only input of the collector."""

    # The latest result of every enabled check, including checks that did not
    # run this cycle (their own interval is longer than the poll interval).
    results: Mapping[str, CheckResult]
    # The last successful reading per source, from Context.readings():
    # "wireguard" -> WgDevice, "tunnel_link" -> LinkState | None, "qbittorrent" -> QbtState.
    readings: Mapping[str, Any]
    remediation: RemediationView
    last_cycle: float  # unix time the last cycle finished
    cycles: int
    reload_failures: int
    checks: tuple[str, ...]  # the enabled checks, in display order
    reasons: Mapping[str, tuple[str, ...]]  # check -> every reason it can report (ok first)
    interface: str = ""  # the tunnel interface from the config
    # Sources whose last read failed (key -> operator message): "down", not "unknown".
    reading_errors: Mapping[str, str] = field(default_factory=dict)
    version: str = __version__
    reload_ok: bool = True  # the last reload (or the start) took the file
    reload_success_time: float = 0.0  # unix time the config was last loaded
    mode: str = "enforce"  # config watchdog.mode

    @property
    def healthy(self) -> bool:
        return all(c in self.results and self.results[c].ok for c in self.checks)


def trailing(
    history: Sequence[CheckResult],
    pred: Callable[[CheckResult], bool],
    after: float | None = None,
) -> int:
    """How many of the newest results satisfy ``pred`` in a row (started after ``after``).

    The one count behind "failed N times in a row": the policy's ``fail_after``,
    the loop's unsettled checks, the status line's "for N cycles".
    """
    n = 0
    for r in reversed(history):
        if after is not None and r.started <= after:
            break
        if not pred(r):
            break
        n += 1
    return n
