"""The daemon's HTTP server alone in a process of its own, for flood tests and the benchmark.

    python -m tests.support.http_subject [--nofile N] [--max-connections N]

Serves a full snapshot through the real Exposition, prints ``PORT <n>`` on
stdout, and runs a stand-in for the checks: a thread that opens and closes a
socket every 50 ms, as the WireGuard UAPI reader and the probes do, counting
the times it gets EMFILE/ENFILE. On SIGTERM it prints one JSON line: those
counts, the peak descriptors and RSS. ``--nofile`` lowers RLIMIT_NOFILE first
(systemd's default soft limit is 1024). Works with the server of an older
checkout too (``PYTHONPATH`` pointing at it): only the arguments it knows are
passed.
"""

from __future__ import annotations

import argparse
import errno
import inspect
import json
import os
import resource
import signal
import socket
import sys
import threading


def rss_mib(pid: int | str = "self") -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # EMFILE: the flood won
        pass
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nofile", type=int, default=0)
    ap.add_argument("--max-connections", type=int, default=0)
    ap.add_argument("--web-config", default="", help="a web-config.yml (this checkout's server)")
    args = ap.parse_args()
    if args.nofile:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile))

    import qbt_vpn_watchdog.config  # noqa: F401 - first, as the daemon does (older checkouts)
    from qbt_vpn_watchdog import http_server
    from qbt_vpn_watchdog.metrics import Exposition
    from tests.core.test_metrics_collector import full_snapshot

    snap = full_snapshot()
    expo = Exposition(lambda: snap)
    kwargs = {}
    params = inspect.signature(http_server.HttpServer).parameters
    if "limits" in params and args.max_connections:
        kwargs["limits"] = http_server.Limits(max_connections=args.max_connections)
    if args.web_config:
        from qbt_vpn_watchdog import config
        from qbt_vpn_watchdog.web_security import load_web_security

        kwargs["security"] = load_web_security(
            config.parse(f'[web]\nconfig_file = "{args.web_config}"\n').web
        )
    server = http_server.HttpServer(expo.render, lambda: (200, "alive; ok: 6/6"), **kwargs)
    server.start(("127.0.0.1", 0))
    stats = {"socket_errors": 0, "socket_ok": 0, "peak_fds": 0, "peak_rss_mib": 0.0,
             "idle_rss_mib": rss_mib()}  # fmt: skip
    stop = threading.Event()

    def checks() -> None:  # what the checks need: a socket now and then
        while not stop.wait(0.05):
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    stats["socket_errors"] += 1
                    continue
                raise
            s.close()
            stats["socket_ok"] += 1
            try:
                stats["peak_fds"] = max(stats["peak_fds"], len(os.listdir("/proc/self/fd")))
            except OSError:
                stats["socket_errors"] += 1
            stats["peak_rss_mib"] = max(stats["peak_rss_mib"], rss_mib())

    t = threading.Thread(target=checks, daemon=True)
    t.start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"PORT {server.address[1]}", flush=True)
    while not stop.wait(0.2):
        pass
    stats["rss_mib"] = rss_mib()
    print(json.dumps(stats), flush=True)
    sys.stdout.flush()
    os._exit(0)  # the server's threads may be blocked on a full descriptor table


if __name__ == "__main__":
    raise SystemExit(main())
