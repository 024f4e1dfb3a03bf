"""The watchdog daemon (``python -m qbt_vpn_watchdog run``) as a child process, and its /metrics.

One helper for the lab's remediation tests, the benchmarks and the kernel VM guest:
started in a session of its own (stopped by its PID, never by name), output in a
log file, /metrics read on loopback.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.lab_load import scrape
from tests.support.procs import Proc, wait_for


class WatchdogProc(Proc):
    """``qbt-vpn-watchdog run --config CONFIG`` serving /metrics on 127.0.0.1:PORT."""

    def __init__(self, config: Path, port: int, log: Path, scrape_timeout: float = 10.0) -> None:
        argv = [sys.executable, "-m", "qbt_vpn_watchdog", "run", "--config", str(config)]
        super().__init__(argv, log)
        # Generous: an answer later than this counts as none (a VM under TCG is slow).
        self.config, self.port, self.scrape_timeout = config, port, scrape_timeout

    def started(self, timeout: float = 60.0) -> WatchdogProc:
        """Self, once its first cycle is on /metrics; if not within ``timeout`` s, the
        process is stopped and the AssertionError carries the end of its log."""
        try:
            wait_for("the daemon's first cycle", lambda: self.cycles() >= 1, timeout, diag=self.tail)
        except BaseException:
            self.stop()
            raise
        return self

    def metrics(self) -> dict[str, dict[str, float]]:
        """{name: {labels: value}}; {} when the daemon does not answer (yet)."""
        return scrape(self.port, self.scrape_timeout)

    def metric(self, name: str, labels: str = "") -> float | None:
        """One series' value (``labels`` as written: 'check="dns"'); None when not there."""
        return self.metrics().get(name, {}).get(labels)

    def cycles(self) -> float:
        """qbtvpn_cycles_total; 0 before the first cycle or when the daemon does not answer."""
        return self.metric("qbtvpn_cycles_total") or 0.0
