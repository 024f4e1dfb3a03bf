"""What rtnetlink and sock_diag through pyroute2 cost the watchdog: CPU per cycle and RSS.

``sudo .venv/bin/python -m tests.bench.netlink [--runs N] [--compare CHECKOUT]``
prints CPU per request and the RSS of a fresh process that imports the
daemon and asks each question once. A benchmark: nothing here passes or fails.
It makes one namespace of its own (``qvw-nlb``: a veth pair, an address, a
listening socket) and deletes it at the end; nothing leaves it.

What is measured is what one watchdog cycle asks of the kernel, through
``qbt_vpn_watchdog.sources.links.Links`` (pyroute2's ``IPRoute`` and ``DiagSocket``):
  link        the tunnel link (flags, MTU, counters) and its addresses
  route       the interface the route to the resolver leaves by
  listeners   TCP sockets listening on qBittorrent's port (IPv4 and IPv6)

``--compare CHECKOUT`` runs the same measurements on another checkout of the
project (e.g. ``git worktree add /tmp/old <commit>``) beside this one, in
fresh processes, so two versions are compared on the same machine and load.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

NS = "qvw-nlb"
IF, PEER = "qvwnb0", "qvwnb1"
ADDR, OTHER = "10.77.0.1", "10.77.0.2"
PORT = 51413
QUESTIONS = ("link", "route", "listeners")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def up() -> socket.socket:
    ip("netns", "add", NS)
    ip("-n", NS, "link", "add", IF, "type", "veth", "peer", "name", PEER)
    ip("-n", NS, "addr", "add", f"{ADDR}/30", "dev", IF)
    for dev in ("lo", IF, PEER):
        ip("-n", NS, "link", "set", dev, "up")
    from qbt_vpn_watchdog.sources.netns import socket_in

    s = socket_in(NS, socket.AF_INET, socket.SOCK_STREAM)
    s.bind((ADDR, PORT))
    s.listen()
    return s


def down() -> None:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def cpu_per_call(fn, runs: int) -> float:
    fn()  # warm: sockets open, modules imported
    t0 = time.process_time()
    for _ in range(runs):
        fn()
    return (time.process_time() - t0) / runs


def child(runs: int) -> None:
    """In a fresh process of the checkout on sys.path: RSS after the daemon's imports and
    one of each question, then CPU per question; one JSON line."""
    import qbt_vpn_watchdog.cli  # noqa: F401 - the daemon's own imports
    import qbt_vpn_watchdog.daemon  # noqa: F401
    import qbt_vpn_watchdog.sources.build  # noqa: F401
    from qbt_vpn_watchdog.sources.links import Links

    links = Links(NS)
    calls = {
        "link": lambda: links.link(IF),
        "route": lambda: links.route_interface(OTHER),
        "listeners": lambda: links.tcp_listeners(PORT),
    }
    for fn in calls.values():
        assert fn() is not None
    rss = next(
        int(line.split()[1]) / 1024
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    modules = sum(1 for m in sys.modules if m == "pyroute2" or m.startswith("pyroute2."))
    cpu = {q: sorted(cpu_per_call(fn, runs) for _ in range(5))[2] for q, fn in calls.items()}
    links.close()
    print(json.dumps({"rss_mib": rss, "pyroute2_modules": modules, "cpu": cpu}))


def measure(checkout: Path, runs: int, repeat: int) -> list[dict]:
    out = []
    for _ in range(repeat):
        p = subprocess.run(
            [sys.executable, __file__, "--child", str(checkout), "--runs", str(runs)],
            capture_output=True, text=True, check=True, cwd="/",
        )  # fmt: skip
        out.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return out


def report(name: str, results: list[dict]) -> None:
    cpu = {q: sorted(r["cpu"][q] for r in results)[len(results) // 2] for q in QUESTIONS}
    print(f"{name}")
    for q in QUESTIONS:
        print(f"  {q:10s} {cpu[q] * 1e3:.3f} ms CPU per call")
    per_cycle = sum(cpu.values()) + cpu["link"]  # return_path reads the link again
    print(
        f"  one cycle: {per_cycle * 1e3:.2f} ms CPU; at a 10 s interval "
        f"{per_cycle / 10 * 100:.3f} % of a core, {per_cycle * 8640:.0f} s CPU a day"
    )
    rss = " ".join(f"{r['rss_mib']:.1f}" for r in results)
    print(f"  RSS after the daemon's imports and one of each (MiB): {rss}")
    print(f"  pyroute2 modules imported: {results[0]['pyroute2_modules']}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000, help="calls per CPU sample (5 samples)")
    ap.add_argument("--repeat", type=int, default=5, help="fresh processes per checkout")
    ap.add_argument("--compare", type=Path, help="another checkout of the project to measure too")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # a fresh process, with the checkout's watchdog package
        sys.path.insert(0, str(args.child))
        child(args.runs)
        return 0
    down()
    sys.path.insert(0, str(ROOT))
    listener = up()
    try:
        print(
            f"CPU: median of {args.repeat} processes, each the median of 5 x {args.runs} calls "
            "(user+sys); RSS: VmRSS of each fresh process"
        )
        report(f"this checkout ({ROOT})", measure(ROOT, args.runs, args.repeat))
        if args.compare:
            other = args.compare.resolve()
            report(f"compared ({other})", measure(other, args.runs, args.repeat))
    finally:
        listener.close()
        down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
