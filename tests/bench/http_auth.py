"""What a password-guessing client gets, and what it costs: issue 23's auth figures.

    .venv/bin/python -m tests.bench.http_auth [--seconds 10]

The server alone in a process (tests/support/http_subject.py) with a
web-config.yml: TLS and one bcrypt user (cost 10, as htpasswd -B). One client
guesses as fast as it can on one kept-alive TLS connection (requests), each
guess a new password; a scraper with the right password (cached after its
first request) scrapes 10 times a second on its own kept connection. Printed:
guesses/s answered (401 after a check or from the cache, 429 throttled),
bcrypt checks actually run, the server's CPU, and the scraper's p50/p99 with
and without the guesser. Loopback only; about 2 x --seconds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bcrypt
import requests
import yaml

from tests.support.flood import percentile
from tests.support.tls_files import self_signed

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def scrape(port: int, cert: str, seconds: float, out: list[float]) -> None:
    with requests.Session() as s:
        s.trust_env = False
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            r = s.get(f"https://127.0.0.1:{port}/metrics", auth=("prometheus", PASSWORD),
                      verify=cert, timeout=5)  # fmt: skip
            if r.status_code == 200:
                out.append(time.perf_counter() - t)
            time.sleep(0.1)


def guess(port: int, cert: str, seconds: float, result) -> None:
    """In a process of its own: a thread would share the scraper's GIL and skew its timings."""
    codes: dict[int, int] = {}
    with requests.Session() as s:
        s.trust_env = False
        end, i = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            i += 1
            r = s.get(f"https://127.0.0.1:{port}/metrics", auth=("prometheus", f"guess{i}"),
                      verify=cert, timeout=5)  # fmt: skip
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
    result.send(codes)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = self_signed(Path(tmp))
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
        wc = Path(tmp) / "web-config.yml"
        wc.write_text(yaml.safe_dump({
            "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
            "basic_auth_users": {"prometheus": hashed.replace("$2b$", "$2y$")},
        }))  # fmt: skip
        p = subprocess.Popen(
            [sys.executable, "-m", "tests.support.http_subject", "--web-config", str(wc)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        try:
            port = int(p.stdout.readline().split()[1])
            quiet: list[float] = []
            cpu0 = cpu_seconds(p.pid)
            scrape(port, str(cert), args.seconds, quiet)
            cpu_quiet = cpu_seconds(p.pid) - cpu0
            busy: list[float] = []
            cpu0 = cpu_seconds(p.pid)
            mine, theirs = multiprocessing.Pipe()
            g = multiprocessing.Process(target=guess, args=(port, str(cert), args.seconds, theirs))
            g.start()
            scrape(port, str(cert), args.seconds, busy)
            codes = mine.recv()
            g.join()
            cpu_busy = cpu_seconds(p.pid) - cpu0
        finally:
            p.send_signal(signal.SIGTERM)
            p.communicate(timeout=10)
    n = sum(codes.values())
    s = args.seconds
    print("| | scrape p50 / p99 (10/s, cached credentials) | guesses answered | of which 401 / 429 |"
          " server CPU |")
    print("|---|---|---|---|---|")
    print(f"| no guesser | {percentile(quiet, 50) * 1000:.1f} / {percentile(quiet, 99) * 1000:.1f} ms"
          f" | - | - | {cpu_quiet / s * 100:.1f} % of a core |")
    print(f"| 1 client guessing | {percentile(busy, 50) * 1000:.1f} / {percentile(busy, 99) * 1000:.1f}"
          f" ms | {n / s:,.0f}/s ({n:,} in {s:g} s) | {codes.get(401, 0):,} / {codes.get(429, 0):,}"
          f" | {cpu_busy / s * 100:.1f} % of a core |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
