"""Issue 21's attack on the real daemon: 2,000 slow connections against its port while it
watches the lab, with systemd's default RLIMIT_NOFILE of 1,024.

Before the server was bounded this took every descriptor: handshake and
return_path reported `error: [Errno 24]` and `unreadable` (unsafe), and the
daemon said it would stop every torrent. Now every check must keep its healthy
result through the flood, every scrape answer within 1 s, and RSS stay within
20 MiB of idle. The daemon runs in observe mode: it touches nothing.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qbt_vpn_watchdog.lab import procs
from qbt_vpn_watchdog.lab import topology as t
from qbt_vpn_watchdog.lab.state import LOG_DIR, STATE_DIR
from tests.support.flood import SlowFlood, percentile, scrape_latencies
from tests.support.http_subject import rss_mib
from tests.support.lab_load import CycleRecorder, scrape
from tests.support.procs import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.root]

PORT = t.METRICS_PORT + 2
NOFILE = 1024  # systemd's default soft limit, what the unit had when the attack worked


def _limit_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


@pytest.fixture
def daemon(lab):
    text = lab.config_path.read_text().replace('mode = "enforce"', 'mode = "observe"')
    cfg = STATE_DIR / "watchdog-flood.toml"
    cfg.write_text(text.replace(f"listen_port = {t.METRICS_PORT}", f"listen_port = {PORT}"))
    log = open(LOG_DIR / "daemon-flood.log", "ab")  # noqa: SIM115 - handed to the child
    p = subprocess.Popen(
        [sys.executable, "-m", "qbt_vpn_watchdog", "run", "--config", str(cfg)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        preexec_fn=_limit_nofile,
    )  # fmt: skip
    procs.pid_file("daemon-flood").write_text(f"{p.pid}\n")
    try:
        wait_for("the daemon healthy", lambda: _healthy(), 60)
        yield p
    finally:
        procs.stop("daemon-flood", "python", timeout=10)
        p.wait(timeout=5)
        log.close()


def _healthy() -> bool:
    try:
        return scrape(PORT).get("qbtvpn_healthy", {}).get("") == 1.0
    except OSError:
        return False


def test_a_flood_twice_the_descriptor_limit_changes_no_check_result(daemon):
    time.sleep(3)
    idle = rss_mib(daemon.pid)
    rec = CycleRecorder(PORT, every=0.5).start()
    try:
        with SlowFlood(PORT, 2000, every=5.0, limit=90):
            time.sleep(5)
            times, failures = scrape_latencies(PORT, 150, gap=0.2, timeout=1.0)
            rss = rss_mib(daemon.pid)
            fds = len(list(Path(f"/proc/{daemon.pid}/fd").iterdir()))
    finally:
        record = rec.stop()
    print(f"\nflood of 2,000 under RLIMIT_NOFILE {NOFILE}: {record.cycles} cycles seen,"
          f" scrape p50 {percentile(times, 50) * 1000:.1f} ms p99 {percentile(times, 99) * 1000:.1f}"
          f" ms max {max(times) * 1000:.1f} ms, {failures} failed; RSS {idle:.1f} -> {rss:.1f} MiB;"
          f" {fds} descriptors")  # fmt: skip
    assert failures == 0 and max(times) < 1.0
    assert record.cycles >= 5
    assert record.non_ok() == {}  # every check kept its healthy result, every cycle
    assert rss - idle < 20
    assert fds < NOFILE / 4
