"""What the loop knows: per-check histories, the latest readings, and the snapshot.

The ``ResultStore`` is written by the loop's thread only. What other threads
see (the HTTP server, through ``snapshot``) is an immutable ``Snapshot``
replaced with one attribute assignment, never mutated.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from qbt_vpn_watchdog.results import CheckResult, Snapshot

if TYPE_CHECKING:
    from qbt_vpn_watchdog.checks import Context

log = logging.getLogger("qbt_vpn_watchdog.daemon")


class ResultStore:
    """Bounded histories, latest results and readings, the published snapshot.

    It only stores: what is due and what is unsettled is the schedule's
    (schedule.py), the liveness answer and the status line health.py's.
    """

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

    @property
    def last_runs(self) -> Mapping[str, float]:
        """When each check last ran (read-only view)."""
        return MappingProxyType(self._last_run)

    def readings(self) -> dict[str, Any]:
        """The last good reading per source (a copy, for a snapshot)."""
        return dict(self._readings)

    def reading_errors(self) -> dict[str, str]:
        """Sources whose last read failed: key -> operator message (a copy)."""
        return dict(self._reading_errors)


def _log_change(prev: CheckResult | None, r: CheckResult) -> None:
    # One line per state change, never one per cycle.
    if prev is None or prev.ok:
        if not r.ok:
            log.warning("%s failed: %s: %s", r.check, r.reason, r.detail)
    elif r.ok:
        log.info("%s recovered (was %s)", r.check, prev.reason)
    elif r.reason != prev.reason:
        log.warning("%s still failing, now %s: %s", r.check, r.reason, r.detail)
