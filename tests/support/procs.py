"""Waiting on things and running child processes in tests: one helper for each job."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def wait_for(
    what: str,
    cond: Callable[[], object],
    timeout: float = 10.0,
    step: float = 0.25,
    diag: Callable[[], str] | None = None,
):
    """Poll ``cond`` every ``step`` s until it returns something true, and return that.

    AssertionError after ``timeout`` s, naming ``what`` (and ``diag()``'s text).
    """
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            more = f"\n{diag()}" if diag else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{more}")
        time.sleep(step)


class Proc:
    """A child process in its own session, output in a file; stopped by its PID, never by name."""

    def __init__(self, argv: list[str], log: Path, env: dict | None = None) -> None:
        self.log = log
        with open(log, "ab") as f:
            e = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
            e.pop("NOTIFY_SOCKET", None)
            self.p = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=e,
                start_new_session=True,
            )  # fmt: skip

    def alive(self) -> bool:
        return self.p.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def cpu(self) -> float:
        """user + system seconds of the process (all threads)."""
        fields = Path(f"/proc/{self.p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.p.poll() is not None:
            return
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(5)
