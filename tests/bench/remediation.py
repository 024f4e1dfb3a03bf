"""Benchmark (a script, not a test): how fast remediation reacts to the 92-byte failure.

Runs the lab's ``return-path`` fault K times against the real daemon and
prints, in seconds and in poll intervals, median and max of:

  fault -> detected   (return_path reports handshake_only or no_return_traffic: the
                      fault re-creates the tunnel first, whose no_tunnel does not count)
  fault -> stopped    (every active torrent stopped and tagged, seen through the API)
  heal  -> resumed    (every tagged torrent running again, tag removed)

    sudo .venv/bin/python tests/bench/remediation.py [-k 5] [--interval 10]

Brings the lab up (and down afterwards) unless it is already up. Root only.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.lab.test_remediation_lab import (  # noqa: E402
    Torrents,
    Watchdog,
    free_port,
    lab_watchdog_config,
    wait_for,
)
from tests.support.lab_fixture import LabHandle  # noqa: E402


def check_failing(w: Watchdog, name: str) -> bool:
    return w.metrics().get("qbtvpn_check_success", {}).get(f'check="{name}"') == 0.0


def return_path_seen(w: Watchdog) -> bool:
    """return_path reports the 92-byte failure itself (not the no_tunnel of the fault's restart)."""
    reasons = w.metrics().get("qbtvpn_check_reason", {})
    return any(
        reasons.get(f'check="return_path",reason="{r}"') == 1.0
        for r in ("handshake_only", "no_return_traffic")
    )


def return_path_rounds(lab: LabHandle, k: int, interval: float | None = None) -> list[tuple]:
    """K rounds of break/heal return-path against the real daemon (enforce mode).

    Returns (fault -> detected, fault -> stopped, heal -> resumed) seconds per round.
    """
    tmp = Path(tempfile.mkdtemp(prefix="qvr-bench-"))
    w = None
    torrents = None
    rows: list[tuple[float, float, float]] = []
    try:
        port = free_port()
        cfg = lab_watchdog_config(lab.config_path, tmp / "watchdog.toml", port)
        if interval:
            text = re.sub(
                r"(?m)^interval = [\d.]+$", f"interval = {interval}", cfg.read_text(), count=1
            )
            cfg.write_text(text)
        from qbt_vpn_watchdog.config import load

        interval = load(cfg).watchdog.interval
        torrents = Torrents(lab, tmp)
        w = Watchdog(cfg, port, tmp / "watchdog.log").start()
        for i in range(k):
            wait_for("remediation ok", lambda: w.state() == "ok", 120, 0.2)
            wait_for("return_path ok", lambda: not check_failing(w, "return_path"), 120, 0.2)
            time.sleep(interval)  # start each round at a random phase of the loop
            lab.break_("return-path")
            t_fault = time.monotonic()
            detected = stopped = None
            while stopped is None or detected is None:
                now = time.monotonic()
                if now - t_fault > 20 * interval + 60:
                    raise SystemExit(f"round {i + 1}: not detected/stopped in time")
                if detected is None and return_path_seen(w):
                    detected = now - t_fault
                if stopped is None and torrents.all_held():
                    stopped = now - t_fault
                time.sleep(0.1)
            lab.heal("return-path")
            t_heal = time.monotonic()
            wait_for("torrents resumed", torrents.all_resumed, 30 * interval + 60, 0.1)
            resumed = time.monotonic() - t_heal
            rows.append((detected, stopped, resumed))
            print(
                f"round {i + 1}/{k}: detected {detected:.1f} s, stopped {stopped:.1f} s, "
                f"resumed {resumed:.1f} s",
                flush=True,
            )
    finally:
        if w is not None:
            w.stop()
        if torrents is not None:
            torrents.cleanup()
        lab.heal()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", type=int, default=5, help="how many fault/heal rounds (default 5)")
    ap.add_argument(
        "--interval", type=float, default=None, help="watchdog.interval (default: the lab's)"
    )
    args = ap.parse_args()

    from qbt_vpn_watchdog.config import load
    from qbt_vpn_watchdog.lab import control

    started_lab = False
    if not control.is_up():
        if control.stale():
            control.down()
        print("bringing the lab up ...", flush=True)
        path = control.up()
        started_lab = True
    else:
        from qbt_vpn_watchdog.lab.state import CONFIG_PATH

        path = CONFIG_PATH
    lab = LabHandle(Path(path), 0.0)
    try:
        rows = return_path_rounds(lab, args.k, args.interval)
        interval = args.interval or load(Path(path)).watchdog.interval
    finally:
        if started_lab:
            control.down()

    print(f"\nreturn-path fault, K={len(rows)}, poll interval {interval:g} s")
    print(f"{'':22}{'median s':>10}{'max s':>10}{'median iv':>11}{'max iv':>9}")
    for label, col in (("fault -> detected", 0), ("fault -> stopped", 1), ("heal -> resumed", 2)):
        xs = [r[col] for r in rows]
        med, mx = statistics.median(xs), max(xs)
        print(f"{label:22}{med:10.1f}{mx:10.1f}{med / interval:11.1f}{mx / interval:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
