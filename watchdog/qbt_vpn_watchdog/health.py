"""Liveness for /healthz and the one-line status (STATUS=, /healthz's body).

Read from what the loop stored: the last published snapshot and the checks'
histories. Nothing here looks at a source.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from qbt_vpn_watchdog.results import CheckResult, Snapshot, trailing
from qbt_vpn_watchdog.systemd import ACTIONS_PER_CYCLE

if TYPE_CHECKING:
    from qbt_vpn_watchdog.config import Config


def stall_limit(cfg: Config, names: Iterable[str]) -> float:
    """Seconds without a finished cycle after which the loop counts as stalled.

    Three intervals, plus a cycle in which every enabled check runs into its
    timeout and every action a cycle can run (``ACTIONS_PER_CYCLE``) into its
    own: only a loop that is really stuck. The one formula: /healthz says
    "stalled" past it, and ``WatchdogSec=`` (systemd.watchdog_sec, the NixOS
    module's default) is its ceiling (tests/artefacts/test_nixos_eval.py holds
    them equal).
    """
    checks = sum(cfg.check(n).timeout for n in names)
    return 3 * cfg.watchdog.interval + checks + ACTIONS_PER_CYCLE * cfg.remediation.action_timeout


def health(
    snap: Snapshot | None, cfg: Config, names: Iterable[str], now: float, status: str
) -> tuple[int, str]:
    """Liveness: is the loop alive? The VPN's state is in the text, not the code.

    A liveness probe that failed whenever the VPN was broken would get the
    watchdog restarted exactly when it is needed most; whether the VPN is
    safe is ``qbtvpn_healthy`` and the body's summary. Stalled: no cycle
    within ``stall_limit``.
    """
    if snap is None:
        return 503, "starting: no cycle finished yet"
    limit = stall_limit(cfg, names)
    age = now - snap.last_cycle
    if age > limit:
        return 503, f"stalled: the last cycle finished {age:.0f} s ago (limit {limit:.0f} s)"
    mode = (
        " (observe mode: reports what it would do, never acts)"
        if cfg.watchdog.mode == "observe"
        else ""
    )
    return 200, f"alive{mode}; {status}"


def status_line(snap: Snapshot, cfg: Config, histories: Mapping[str, Sequence[CheckResult]]) -> str:
    """The STATUS= / healthz one-liner, e.g. ``ok: 6/6 checks passed``."""
    names = snap.checks
    ran = [snap.results[n] for n in names if n in snap.results]
    failing = [r for r in ran if not r.ok]
    view = snap.remediation
    if not failing:
        line = f"ok: {len(ran)}/{len(names)} checks passed"
    else:
        word = "UNSAFE" if view.state != "ok" else "FAILING"
        parts = []
        for r in failing:
            n = trailing(histories.get(r.check, ()), lambda x: not x.ok)
            unit = "cycle" if cfg.check(r.check).interval <= 0 else "run"
            parts.append(f"{r.check} ({r.reason}) for {n} {unit}{'s' if n != 1 else ''}")
        line = f"{word} {', '.join(parts)}"
    if view.summary:
        line += f"; {view.summary}"
    elif view.held_stopped:
        line += f"; holding {view.held_stopped} torrents"
    if view.observe_only:
        line += " [observe only]"
    return line
