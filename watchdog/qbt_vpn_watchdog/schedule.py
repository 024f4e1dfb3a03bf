"""When the loop runs what: the fixed-rate cycle, link-event cycles, confirmations.

The daemon's schedule, apart from the daemon: which checks are due by their own
interval (``checks_due``), which results are unsettled and worth confirming
within seconds (``unsettled``), and the loop's timing (``Schedule``). The
store only stores; these read what it stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from qbt_vpn_watchdog.results import UNSAFE, CheckResult, trailing

if TYPE_CHECKING:
    from qbt_vpn_watchdog.checks import CheckSpec
    from qbt_vpn_watchdog.config import Config

# A link event (the tunnel deleted, down, an address gone) runs the checks that
# read the link (``register(..., on_link_event=True)``) at once, instead of
# waiting up to an interval. At most one such cycle a second, however many
# events arrive.
EVENT_CYCLE_GAP = 1.0
# An unsettled check (see Schedule) runs again this long after the cycle that
# left it unsettled.
CONFIRM_GAP = 1.0


def checks_due(
    cfg: Config, names: Iterable[str], last_run: Mapping[str, float], now: float
) -> dict[str, float]:
    """The checks whose own interval has passed: name -> timeout."""
    # Cycles start on a fixed schedule but not to the microsecond: a slack
    # of a quarter interval keeps a 60 s check on a 10 s loop at 60 s, not 70.
    slack = cfg.watchdog.interval / 4
    due = {}
    for name in names:
        c = cfg.check(name)
        last = last_run.get(name)
        if c.interval <= 0 or last is None or now - last >= c.interval - slack:
            due[name] = c.timeout
    return due


def unsettled(
    cfg: Config,
    histories: Mapping[str, Sequence[CheckResult]],
    specs: Mapping[str, CheckSpec],
) -> list[str]:
    """Checks to confirm soon: their latest result is provisional, or unsafe but
    not yet ``fail_after`` times in a row (remediation does not act on one)."""
    out = []
    for name, h in histories.items():
        if not h or name not in specs:
            continue
        if h[-1].provisional:
            out.append(name)
            continue
        spec = specs[name]
        n = trailing(h, lambda r, spec=spec: not r.ok and spec.reason(r.reason).severity == UNSAFE)
        if 0 < n < cfg.check(name).fail_after:
            out.append(name)
    return out


class Schedule:
    """When the loop runs what: every check on a fixed rate, the link checks at once on
    a link event (at most once per EVENT_CYCLE_GAP), and unsettled checks again
    CONFIRM_GAP after the cycle that left them so.

    Unsettled: a provisional result (return_path waiting for evidence) or an
    unsafe one that remediation does not act on yet (fewer than ``fail_after``
    in a row). Confirming it within seconds instead of an interval later is what
    stops torrents within 15 s of the 92-byte failure at the default 10 s
    interval, while ``fail_after`` still asks for two results in a row.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_cycle = time.monotonic()
        self.last_event = -EVENT_CYCLE_GAP
        self.confirm: list[str] = []
        self.confirm_at: float | None = None

    def due(self, now: float, events_pending: bool) -> str | None:
        """What to run now: "cycle", "event", "confirm" or None (sleep)."""
        if now >= self.next_cycle:
            # Fixed rate: the next cycle starts one interval after this one started.
            self.next_cycle = now + self.interval
            return "cycle"
        if events_pending and now - self.last_event >= EVENT_CYCLE_GAP:
            self.last_event = now
            return "event"
        if self.confirm_at is not None and now >= self.confirm_at:
            return "confirm"
        return None

    def ran(self, unsettled: list[str]) -> None:
        self.confirm = unsettled
        self.confirm_at = time.monotonic() + CONFIRM_GAP if unsettled else None

    def wake(self, events_pending: bool) -> float:
        wake = self.next_cycle
        if events_pending:
            wake = min(wake, self.last_event + EVENT_CYCLE_GAP)
        if self.confirm_at is not None:
            wake = min(wake, self.confirm_at)
        return wake
