"""Scrape latency, RSS and descriptors of the HTTP server under slow-connection floods.

    .venv/bin/python -m tests.bench.http_flood [--before REV] [--counts 0 300 2000]

For each server (this checkout's, and with ``--before`` the one at git
revision REV, e.g. main) and each flood size: the server alone in a process
(tests/support/http_subject.py) with RLIMIT_NOFILE 1024 (systemd's default),
a flood of slow connections (one header line every 5 s each, reconnecting
when closed), then 40 scrapes of /metrics on new connections, 1 s timeout
each (a failure past it). Prints one Markdown table (docs/performance.md).
Loopback only; about 10 s per row for a bounded server, up to 50 s for an
unbounded one under a flood.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from tests.support.flood import SlowFlood, percentile, scrape_latencies
from tests.support.http_subject import rss_mib

ROOT = Path(__file__).resolve().parents[2]


def checkout(rev: str, into: Path) -> Path:
    """The package sources at ``rev`` (git archive), for PYTHONPATH."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "watchdog"],
                          capture_output=True, check=True).stdout  # fmt: skip
    tar = into / "src.tar"
    tar.write_bytes(data)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return into / "watchdog"


def row(label: str, pythonpath: str, n: int, scrapes: int) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath)
    p = subprocess.Popen(
        [sys.executable, "-m", "tests.support.http_subject", "--nofile", "1024"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        port = int(p.stdout.readline().split()[1])
        idle = rss_mib(p.pid)
        with SlowFlood(port, n, every=5.0, limit=120) as flood:
            time.sleep(3 if n else 0.5)
            times, failures = scrape_latencies(port, scrapes, gap=0.1, timeout=1.0)
            try:
                fds = len(os.listdir(f"/proc/{p.pid}/fd"))
            except OSError:
                fds = -1
            rss = rss_mib(p.pid)
            held = flood.open_now
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            out, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
    lines = [x for x in out.splitlines() if x.startswith("{")]
    inner = json.loads(lines[-1]) if lines else {}
    return {
        "server": label, "slow": n, "held": held, "p50": percentile(times, 50) * 1000,
        "p99": percentile(times, 99) * 1000, "failed": failures, "scrapes": scrapes,
        "rss_idle": idle, "rss": rss, "fds": fds,
        "socket_errors": inner.get("socket_errors", "?"),
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="", help="a git revision to compare with, e.g. main")
    ap.add_argument("--counts", type=int, nargs="+", default=[0, 300, 2000])
    ap.add_argument("--scrapes", type=int, default=40)
    args = ap.parse_args()
    here = str(ROOT / "watchdog") + os.pathsep + str(ROOT)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        servers = [("after", here)]
        if args.before:
            old = checkout(args.before, Path(tmp))
            servers.insert(0, (f"before ({args.before})", f"{old}{os.pathsep}{ROOT}"))
        for label, path in servers:
            for n in args.counts:
                rows.append(row(label, path, n, args.scrapes))
                print(rows[-1], file=sys.stderr, flush=True)
    print("| server | slow connections (held open) | scrape p50 / p99 | scrapes failed"
          " (1 s timeout) | RSS idle → flooded | descriptors | checks' socket() EMFILE |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['server']} | {r['slow']:,} ({r['held']:,}) | {r['p50']:.1f} / {r['p99']:.1f} ms"
              f" | {r['failed']} of {r['scrapes']} | {r['rss_idle']:.1f} → {r['rss']:.1f} MiB"
              f" | {r['fds']} | {r['socket_errors']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
