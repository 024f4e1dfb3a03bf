"""What the loop knows: per-check histories, the latest readings, and the snapshot.

The ``ResultStore`` is written by the loop's thread only. What other threads
see (the HTTP server, through ``snapshot``) is an immutable ``Snapshot``
replaced with one attribute assignment, never mutated.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qbt_vpn_watchdog.metrics import Snapshot
from qbt_vpn_watchdog.results import UNSAFE, CheckResult, RemediationView

if TYPE_CHECKING:
    from qbt_vpn_watchdog.checks import CheckSpec, Context
    from qbt_vpn_watchdog.config import Config

log = logging.getLogger("qbt_vpn_watchdog.daemon")


class ResultStore:
    """Bounded histories, latest results and readings; builds the snapshot and the summaries."""

    def __init__(self, history: int, loaded_at: float = 0.0) -> None:
        self.maxlen = history
        self.cycles = 0
        self.reload_failures = 0
        self.reload_ok = True  # the running config is the file's
        self.reload_success_time = loaded_at  # when the file was last taken (start or reload)
        self.snapshot: Snapshot | None = None  # read by the HTTP threads; replaced, never mutated
        self._histories: dict[str, deque[CheckResult]] = {}
        self._last_run: dict[str, float] = {}
        self._readings: dict[str, Any] = {}
        self._reading_errors: dict[str, str] = {}

    # --- writing -------------------------------------------------------------------

    def record(self, results: Mapping[str, CheckResult], ran_at: float) -> None:
        """Append a cycle's results to their histories, logging each state change once."""
        for name, r in results.items():
            h = self.history(name)
            _log_change(h[-1] if h else None, r)
            h.append(r)
            self._last_run[name] = ran_at

    def merge_readings(self, ctx: Context) -> None:
        """Keep the last good reading of a source no check needed this cycle;
        drop it (and say why) when this cycle's read failed."""
        for key, value in ctx.readings().items():
            self._readings[key] = value
            self._reading_errors.pop(key, None)
        for key, why in ctx.reading_errors().items():
            self._readings.pop(key, None)
            self._reading_errors[key] = why

    def keep_only(self, names: Iterable[str], history: int) -> None:
        """After a reload: forget checks no longer enabled, resize the rest."""
        keep = set(names)
        for name in list(self._histories):
            if name not in keep:
                del self._histories[name]
                self._last_run.pop(name, None)
            elif self._histories[name].maxlen != history:
                self._histories[name] = deque(self._histories[name], maxlen=history)
        self.maxlen = history

    def publish(self, snap: Snapshot) -> Snapshot:
        self.snapshot = snap  # the atomic swap the HTTP threads see
        return snap

    def reload_failed(self) -> None:
        self.reload_failures += 1
        self.reload_ok = False
        self._republish()

    def reload_succeeded(self, now: float) -> None:
        self.reload_ok, self.reload_success_time = True, now
        self._republish()

    def _republish(self) -> None:
        # A reload's result shows at the next scrape, not only after the next cycle.
        if self.snapshot is not None:
            self.publish(
                dataclasses.replace(
                    self.snapshot,
                    reload_failures=self.reload_failures,
                    reload_ok=self.reload_ok,
                    reload_success_time=self.reload_success_time,
                )
            )

    # --- reading -------------------------------------------------------------------

    def history(self, name: str) -> deque[CheckResult]:
        h = self._histories.get(name)
        if h is None:
            h = self._histories[name] = deque(maxlen=self.maxlen)
        return h

    def histories(self, names: Iterable[str]) -> dict[str, tuple[CheckResult, ...]]:
        return {n: tuple(self.history(n)) for n in names}

    def latest(self, name: str) -> CheckResult | None:
        h = self._histories.get(name)
        return h[-1] if h else None

    def last_run(self, name: str) -> float | None:
        return self._last_run.get(name)

    def unsettled(
        self, cfg: Config, names: Iterable[str], specs: Mapping[str, CheckSpec]
    ) -> list[str]:
        """Checks to confirm soon: their latest result is provisional, or unsafe but
        not yet ``fail_after`` times in a row (remediation does not act on one)."""
        out = []
        for name in names:
            h = self._histories.get(name)
            if not h or name not in specs:
                continue
            if h[-1].provisional:
                out.append(name)
                continue
            n = 0
            for r in reversed(h):
                if r.ok or specs[name].reason(r.reason).severity != UNSAFE:
                    break
                n += 1
            if 0 < n < cfg.check(name).fail_after:
                out.append(name)
        return out

    def build_snapshot(
        self,
        cfg: Config,
        names: Sequence[str],
        specs: Mapping[str, CheckSpec],
        remediation: RemediationView,
        finished: float,
    ) -> Snapshot:
        results = {n: r for n in names if (r := self.latest(n)) is not None}
        return Snapshot(
            results=results,
            readings=dict(self._readings),
            remediation=remediation,
            last_cycle=finished,
            cycles=self.cycles,
            reload_failures=self.reload_failures,
            reload_ok=self.reload_ok,
            reload_success_time=self.reload_success_time,
            mode=cfg.watchdog.mode,
            checks=tuple(names),
            reasons={n: specs[n].all_reasons for n in names},
            interface=cfg.wireguard.interface,
            reading_errors=dict(self._reading_errors),
        )

    def due(self, cfg: Config, names: Iterable[str], now: float) -> dict[str, float]:
        """The checks whose own interval has passed: name -> timeout."""
        # Cycles start on a fixed schedule but not to the microsecond: a slack
        # of a quarter interval keeps a 60 s check on a 10 s loop at 60 s, not 70.
        slack = cfg.watchdog.interval / 4
        due = {}
        for name in names:
            c = cfg.check(name)
            last = self._last_run.get(name)
            if c.interval <= 0 or last is None or now - last >= c.interval - slack:
                due[name] = c.timeout
        return due

    def health(self, cfg: Config, names: Iterable[str], now: float, status: str) -> tuple[int, str]:
        """Liveness: is the loop alive? The VPN's state is in the text, not the code.

        A liveness probe that failed whenever the VPN was broken would get the
        watchdog restarted exactly when it is needed most; whether the VPN is
        safe is ``qbtvpn_healthy`` and the body's summary. Stalled: no cycle
        for three intervals plus the longest check timeout.
        """
        snap = self.snapshot
        if snap is None:
            return 503, "starting: no cycle finished yet"
        longest = max((cfg.check(n).timeout for n in names), default=0.0)
        limit = 3 * cfg.watchdog.interval + longest
        age = now - snap.last_cycle
        if age > limit:
            return 503, f"stalled: the last cycle finished {age:.0f} s ago (limit {limit:.0f} s)"
        mode = (
            " (observe mode: reports what it would do, never acts)"
            if cfg.watchdog.mode == "observe"
            else ""
        )
        return 200, f"alive{mode}; {status}"

    def failing_for(self, name: str) -> int:
        """How many of the check's newest results failed in a row."""
        n = 0
        for r in reversed(self._histories.get(name, ())):
            if r.ok:
                break
            n += 1
        return n

    def summarize(self, snap: Snapshot, cfg: Config) -> str:
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
                n = self.failing_for(r.check)
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


def _log_change(prev: CheckResult | None, r: CheckResult) -> None:
    # One line per state change, never one per cycle.
    if prev is None or prev.ok:
        if not r.ok:
            log.warning("%s failed: %s: %s", r.check, r.reason, r.detail)
    elif r.ok:
        log.info("%s recovered (was %s)", r.check, prev.reason)
    elif r.reason != prev.reason:
        log.warning("%s still failing, now %s: %s", r.check, r.reason, r.detail)
