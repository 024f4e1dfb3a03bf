"""Slow-connection floods and a timed scraper, for the HTTP server's tests and benchmark.

``SlowFlood`` keeps ``n`` connections open to a loopback port, each sending one
header line every ``every`` seconds and never finishing its request (the
attack of issue 21: 1,000 of them once took every descriptor of the daemon);
a connection the server closes is opened again, at most ``reconnects`` a
second, as a persistent attacker would. Loopback only; it stops by itself
after ``limit`` seconds whatever happens.
"""

from __future__ import annotations

import errno
import http.client
import resource
import socket
import statistics
import threading
import time


def raise_nofile(need: int) -> None:
    """Let this process hold ``need`` descriptors (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


class SlowFlood:
    def __init__(
        self, port: int, n: int, every: float = 5.0, reconnects: float = 200.0,
        limit: float = 120.0, line: bytes = b"X-Slow: 1\r\n",
    ) -> None:  # fmt: skip
        self.port, self.n, self.every, self.rate, self.limit = port, n, every, reconnects, limit
        self.line = line
        self.socks: list[socket.socket | None] = [None] * n
        self.next_send = [0.0] * n
        self.started = [False] * n  # the request line went out
        self.opened = 0
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)

    def __enter__(self) -> SlowFlood:
        raise_nofile(self.n + 256)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in self.socks:
            if s is not None:
                s.close()

    @property
    def open_now(self) -> int:
        return sum(s is not None for s in self.socks)

    def _open(self, i: int, now: float) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", self.port))
        if err not in (0, errno.EINPROGRESS):
            s.close()
            return
        self.socks[i] = s
        self.started[i] = False
        self.opened += 1
        # Spread the lines over the period, as independent clients would be.
        self.next_send[i] = now + (i % 50) * self.every / 50

    def _run(self) -> None:
        start = time.monotonic()
        budget = 0.0
        while not self._stop.is_set() and time.monotonic() - start < self.limit:
            now = time.monotonic()
            budget = min(budget + self.rate * 0.05, self.rate)
            for i, s in enumerate(self.socks):
                if s is None:
                    if budget >= 1 or self.opened < self.n:
                        if self.opened >= self.n:
                            budget -= 1
                        self._open(i, now)
                    continue
                if now < self.next_send[i]:
                    continue
                self.next_send[i] = now + self.every
                try:
                    gone = s.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if not gone:
                    try:
                        s.send(self.line if self.started[i] else b"GET /metrics HTTP/1.1\r\n")
                        self.started[i] = True
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError as e:
                        gone = e.errno != errno.ENOTCONN  # still connecting
                        if not gone:
                            self.next_send[i] = now + 0.05
                if gone:
                    s.close()
                    self.socks[i] = None
                    self.closed_by_server += 1
            self._stop.wait(0.05)


def scrape_latencies(
    port: int, count: int, gap: float = 0.05, timeout: float = 2.0, keep_alive: bool = False
) -> tuple[list[float], int]:
    """Seconds per GET /metrics (a new connection each, or one kept), and the failures."""
    times, failures = [], 0
    conn = None
    for _ in range(count):
        t = time.perf_counter()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise OSError(f"status {r.status}")
            times.append(time.perf_counter() - t)
        except (OSError, http.client.HTTPException):
            failures += 1
            if conn is not None:
                conn.close()
            conn = None
        if not keep_alive and conn is not None:
            conn.close()
            conn = None
        time.sleep(gap)
    if conn is not None:
        conn.close()
    return times, failures


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]
