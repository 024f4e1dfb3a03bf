"""Load for the lab: bulk downloads that saturate the tunnel, and a per-cycle record
of what the running daemon reported.

Shared by the saturation test (tests/lab/test_lab_saturation.py) and the soak
benchmark (``python -m tests.bench --only soak``). Traffic stays inside the
lab: curl in the confined namespace downloads from the lab's "internet" host
(``GET /bytes/N`` of watchdog/qbt_vpn_watchdog/lab/whatismyip.py) through the tunnel.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from qbt_vpn_watchdog.lab import topology as t

BULK_URL = f"http://{t.WHATISMYIP_IP}/bytes/{1 << 34}"
_LINE = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$")


def tunnel_rx_bytes() -> int:
    """Decrypted bytes received on the lab's client tunnel so far (0 without a tunnel)."""
    out = t.run(["ip", "-s", "-n", t.NS_VPN, "link", "show", t.WG_CLIENT], check=False).split()
    try:
        return int(out[out.index("RX:") + 7])  # "RX: bytes packets errors ... \n <bytes> ..."
    except (ValueError, IndexError):
        return 0


class Saturation:
    """``n`` parallel bulk downloads through the tunnel, restarted as they end, until stop().

    Each download is a curl in the confined namespace, started in its own
    session and stopped by its PID. ``mb_per_s()`` is the tunnel's received
    rate since start.
    """

    def __init__(self, n: int = 3) -> None:
        self.n = n
        self._procs: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.started = 0.0
        self.rx0 = 0

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen(
            ["ip", "netns", "exec", t.NS_VPN, "curl", "-s", "--noproxy", "*", "-o", "/dev/null",
             BULK_URL],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def _keep(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                for i, p in enumerate(self._procs):
                    if p.poll() is not None and not self._stop.is_set():
                        self._procs[i] = self._spawn()

    def start(self) -> Saturation:
        self.started, self.rx0 = time.monotonic(), tunnel_rx_bytes()
        self._stop.clear()
        with self._lock:
            self._procs = [self._spawn() for _ in range(self.n)]
        self._thread = threading.Thread(target=self._keep, daemon=True)
        self._thread.start()
        return self

    def mb_per_s(self) -> float:
        took = time.monotonic() - self.started
        return (tunnel_rx_bytes() - self.rx0) / 1e6 / took if took > 0 else 0.0

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            for p in self._procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
            for p in self._procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
            self._procs = []

    def __enter__(self) -> Saturation:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- what the daemon reported, cycle by cycle ------------------------------------------------


def scrape(port: int, timeout: float = 2.0) -> dict[str, dict[str, float]]:
    """{metric: {labels: value}} from the daemon's /metrics on loopback; {} when it does not
    answer within ``timeout`` s."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.setdefault(m.group(1), {})[m.group(2) or ""] = float(m.group(3))
    return out


def _labels(s: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', s))


@dataclass
class CycleRecord:
    """Per check and reason: how many cycles reported it (one count per check per cycle seen)."""

    cycles: int = 0
    reasons: Counter = field(default_factory=Counter)  # (check, reason) -> cycles
    by_phase: dict[str, Counter] = field(default_factory=dict)  # phase -> (check, reason) -> n
    phase_cycles: Counter = field(default_factory=Counter)
    last_remediations: dict[str, float] = field(default_factory=dict)

    def non_ok(self) -> dict[tuple[str, str], int]:
        return {k: v for k, v in sorted(self.reasons.items()) if k[1] != "ok"}


class CycleRecorder:
    """Polls the daemon's /metrics and records each new cycle's reason per check.

    A cycle is seen when ``qbtvpn_cycles_total`` changes; the reasons are then
    the ``qbtvpn_check_reason`` series at 1. A check that did not run that
    cycle (its own interval) still shows its last result, which is counted
    again: the numbers are cycles in that state, as the dashboard shows them.
    """

    def __init__(self, port: int, every: float = 0.25) -> None:
        self.port, self.every = port, every
        self.record = CycleRecord()
        self.phase = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CycleRecorder:
        self._thread.start()
        return self

    def stop(self) -> CycleRecord:
        self._stop.set()
        self._thread.join(5)
        return self.record

    def _run(self) -> None:
        last = None
        while not self._stop.wait(self.every):
            m = scrape(self.port)
            n = m.get("qbtvpn_cycles_total", {}).get("")
            if n is None or n == last:
                continue
            last = n
            rec = self.record
            rec.cycles += 1
            rec.phase_cycles[self.phase] += 1
            phase = rec.by_phase.setdefault(self.phase, Counter())
            for labels, v in m.get("qbtvpn_check_reason", {}).items():
                if v == 1.0:
                    lab = _labels(labels)
                    key = (lab["check"], lab["reason"])
                    rec.reasons[key] += 1
                    phase[key] += 1
            rec.last_remediations = {
                _labels(k).get("action", k): v
                for k, v in m.get("qbtvpn_remediations_total", {}).items()
            }
