"""rtnetlink and sock_diag: the hand-written client (watchdog/sources/rtnl.py) beside pyroute2.

``sudo .venv/bin/python -m tests.bench.netlink [--runs N]`` prints CPU per
request and the RSS each costs in a fresh process. A benchmark: nothing here
passes or fails. It makes one namespace of its own (``qvw-nlb``: a veth pair,
an address, a listening socket) and deletes it at the end; nothing leaves it.

What is compared is what one watchdog cycle asks of the kernel:
  link        the tunnel link (flags, MTU, counters) and its addresses
  route       the interface the route to the resolver leaves by
  listeners   TCP sockets listening on qBittorrent's port (IPv4 and IPv6)
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

NS = "qvw-nlb"
IF, PEER = "qvwnb0", "qvwnb1"
ADDR, OTHER = "10.77.0.1", "10.77.0.2"
PORT = 51413


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def up() -> socket.socket:
    ip("netns", "add", NS)
    ip("-n", NS, "link", "add", IF, "type", "veth", "peer", "name", PEER)
    ip("-n", NS, "addr", "add", f"{ADDR}/30", "dev", IF)
    for dev in ("lo", IF, PEER):
        ip("-n", NS, "link", "set", dev, "up")
    from pyroute2 import netns

    s = netns.create_socket(NS, socket.AF_INET, socket.SOCK_STREAM, flags=0)
    s.bind((ADDR, PORT))
    s.listen()
    return s


def down() -> None:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)


# --- the two implementations of the same three questions ------------------------------


def ours():
    from qbt_vpn_watchdog.sources.links import Links

    links = Links(NS)
    return {
        "link": lambda: links.link(IF),
        "route": lambda: links.route_interface(OTHER),
        "listeners": lambda: links.tcp_listeners(PORT),
    }, links.close


def theirs():
    # Only the modules used, not the package's __init__ (which pulls NDB and more).
    from pyroute2.iproute.linux import IPRoute
    from pyroute2.netlink.diag import DiagSocket
    from pyroute2.netns import popns, pushns

    ipr = IPRoute(netns=NS, flags=0)
    pushns(NS)  # DiagSocket has no netns argument: make it inside the namespace
    try:
        diag = DiagSocket()
        diag.bind()
    finally:
        popns()

    def link():
        (msg,) = ipr.link("get", ifname=IF)
        index = msg["index"]
        addrs = [a.get("IFA_LOCAL") or a.get("IFA_ADDRESS") for a in ipr.addr("dump")
                 if a["index"] == index]  # fmt: skip
        return msg.get("IFLA_IFNAME"), msg.get("IFLA_STATS64"), addrs

    def route():
        (r,) = ipr.route("get", dst=OTHER)
        (msg,) = ipr.link("get", index=r.get("RTA_OIF"))
        return msg.get("IFLA_IFNAME")

    def listeners():
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for m in diag.get_sock_stats(family=family, states=1 << 10):
                if m["idiag_sport"] == PORT:
                    out.append((m["idiag_src"], m["idiag_sport"], m["idiag_if"]))
        return out

    def close():
        ipr.close()
        diag.close()

    return {"link": link, "route": route, "listeners": listeners}, close


def cpu_per_call(fn, runs: int) -> float:
    fn()  # warm: sockets open, modules imported
    t0 = time.process_time()
    for _ in range(runs):
        fn()
    return (time.process_time() - t0) / runs


def rss_child(which: str) -> None:
    """In a fresh process: one of each question, then print VmRSS (MiB)."""
    impl, close = (ours if which == "ours" else theirs)()
    for fn in impl.values():
        fn()
    close()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            print(json.dumps({"rss_mib": int(line.split()[1]) / 1024}))


def rss(which: str, runs: int = 5) -> list[float]:
    out = []
    for _ in range(runs):
        p = subprocess.run(
            [sys.executable, "-m", "tests.bench.netlink", "--rss-child", which],
            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        out.append(json.loads(p.stdout.strip().splitlines()[-1])["rss_mib"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--rss-child", choices=("ours", "pyroute2"))
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return 0
    down()
    listener = up()
    try:
        print(f"CPU per call, median of 5 x {args.runs} calls (user+sys of this process)")
        results = {}
        for name, make in (("ours", ours), ("pyroute2", theirs)):
            impl, close = make()
            results[name] = {
                q: sorted(cpu_per_call(fn, args.runs) for _ in range(5))[2]
                for q, fn in impl.items()
            }
            close()
        for q in ("link", "route", "listeners"):
            a, b = results["ours"][q], results["pyroute2"][q]
            print(f"  {q:10s} ours {a * 1e3:.3f} ms   pyroute2 {b * 1e3:.3f} ms   ({b / a:.0f}x)")
        for name in ("ours", "pyroute2"):
            per_cycle = sum(results[name].values()) + results[name]["link"]  # return_path re-reads
            print(
                f"  one cycle ({name}): {per_cycle * 1e3:.2f} ms CPU; at a 10 s interval "
                f"{per_cycle / 10 * 100:.3f} % of a core, {per_cycle * 8640:.0f} s CPU a day"
            )
        print("RSS of a fresh process after one of each (MiB, 5 runs)")
        for name in ("ours", "pyroute2"):
            xs = rss(name)
            print(f"  {name:9s} " + " ".join(f"{x:.1f}" for x in xs))
    finally:
        listener.close()
        down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
