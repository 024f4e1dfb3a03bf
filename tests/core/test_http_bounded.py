"""The HTTP server bounded (issue 21): floods of slow connections, oversized heads, deadlines.

Real sockets on loopback against the daemon's server (qbt_vpn_watchdog.http_server),
in this process or alone in a subprocess with a lowered RLIMIT_NOFILE
(tests/support/http_subject.py, which also stands in for the checks: a socket
opened every 50 ms must never fail with EMFILE).
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qbt_vpn_watchdog.http_server import (
    HEAD_BYTES,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    WRITING,
    HttpServer,
    Limits,
)
from qbt_vpn_watchdog.metrics import Exposition
from tests.core.test_metrics_collector import full_snapshot
from tests.support.flood import SlowFlood, scrape_latencies
from tests.support.http_subject import rss_mib
from tests.support.procs import wait_for

ROOT = Path(__file__).resolve().parents[2]


def serve(limits: Limits | None = None) -> HttpServer:
    snap = full_snapshot()
    server = HttpServer(Exposition(lambda: snap).render, lambda: (200, "alive; ok"), limits=limits)
    server.start(("127.0.0.1", 0))
    return server


@pytest.fixture
def server():
    s = serve()
    yield s
    s.stop()


def get(conn: http.client.HTTPConnection, path: str = "/metrics") -> int:
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    return r.status


def test_the_defaults_are_what_the_docs_promise():
    assert MAX_CONNECTIONS == 40  # node_exporter's --web.max-requests
    assert IDLE_TIMEOUT > 300  # Prometheus keeps a connection up to 5 minutes, scrapes every 15 s
    assert HEAD_BYTES == 16384


def test_scrapes_answer_within_1_s_under_a_flood_7x_the_cap(server):
    port = server.address[1]
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    assert get(kept) == 200  # Prometheus's kept-alive connection, opened before the flood
    with SlowFlood(port, 300, every=1.0, limit=60) as flood:
        time.sleep(2)
        seen_open = []
        for _ in range(20):
            t = time.perf_counter()
            assert get(kept) == 200  # never pushed out by connections without a request
            assert time.perf_counter() - t < 1.0
            seen_open.append(server.stats.open)
        times, failures = scrape_latencies(port, 20, gap=0.02, timeout=1.0)
        assert failures == 0 and max(times) < 1.0, (failures, times)
        assert max(seen_open) <= MAX_CONNECTIONS
        assert flood.closed_by_server > 0  # they were pushed out and came back
    assert server.stats.dropped["max_connections"] > 0
    kept.close()


def test_a_flood_larger_than_the_descriptor_limit_never_starves_the_checks(tmp_path):
    """The daemon's server alone under RLIMIT_NOFILE 128, flooded with 400 connections."""
    p = subprocess.Popen(
        [sys.executable, "-m", "tests.support.http_subject", "--nofile", "128"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        port = int(p.stdout.readline().split()[1])
        idle = rss_mib(p.pid)
        with SlowFlood(port, 400, every=1.0, limit=60):
            time.sleep(3)
            times, failures = scrape_latencies(port, 30, gap=0.05, timeout=1.0)
            fds = len(list(Path(f"/proc/{p.pid}/fd").iterdir()))
            rss = rss_mib(p.pid)
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=15)
    stats = json.loads(out.splitlines()[-1])
    assert failures == 0 and max(times) < 1.0, (failures, times)
    assert stats["socket_errors"] == 0 and stats["socket_ok"] > 50  # the checks' sockets
    assert fds <= MAX_CONNECTIONS + 20  # the server's cap and the interpreter's own
    assert rss - idle < 20, (idle, rss)


def test_an_oversized_head_gets_431_and_costs_no_memory(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "tests.support.http_subject"],
                         stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    try:
        port = int(p.stdout.readline().split()[1])
        before = rss_mib(p.pid)
        answers = []
        socks = []
        header = b"X-Big: " + b"a" * 65536 + b"\r\n"
        for _ in range(40):  # issue 21: 40 connections, 100 x 64 KiB headers, 43 -> 291 MiB
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            sent = 0
            try:
                for _ in range(100):
                    s.sendall(header)
                    sent += 1
            except OSError:
                pass  # the server answered and closed after HEAD_BYTES
            socks.append(s)
            assert sent < 100
        for s in socks:
            try:
                answers.append(s.recv(200).split(b"\r\n")[0])
            except OSError:
                answers.append(b"reset")
            s.close()
        after = rss_mib(p.pid)
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=15)
    assert b"HTTP/1.1 431 Request Header Fields Too Large" in answers
    assert set(answers) <= {b"HTTP/1.1 431 Request Header Fields Too Large", b"reset", b""}
    assert after - before < 5, (before, after)


def test_the_head_deadline_is_not_rearmed_by_each_byte():
    s = serve(Limits(head_timeout=1.0))
    try:
        c = socket.create_connection(("127.0.0.1", s.address[1]), timeout=5)
        start = time.monotonic()
        closed_at = None
        for b in b"GET /metrics HTTP/1.1\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaa":
            try:
                c.send(bytes([b]))
                c.settimeout(0.25)
                if c.recv(1) == b"":
                    closed_at = time.monotonic()
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_at = time.monotonic()
                break
        c.close()
        assert closed_at is not None and closed_at - start < 2.0
        assert s.stats.dropped["head_timeout"] == 1
    finally:
        s.stop()


def test_kept_alive_connections_are_reused_and_idle_ones_closed_at_their_timeout():
    s = serve(Limits(idle_timeout=1.0))
    try:
        c = http.client.HTTPConnection("127.0.0.1", s.address[1], timeout=5)
        assert get(c) == 200
        sock = c.sock
        time.sleep(0.3)
        assert get(c) == 200 and c.sock is sock  # the same connection
        time.sleep(1.6)
        assert s.stats.open == 0  # closed by the server, nothing counted as dropped
        assert sum(s.stats.dropped.values()) == 0
        c.close()
    finally:
        s.stop()


def test_at_the_cap_with_every_connection_busy_a_new_one_gets_503():
    s = serve(Limits(max_connections=2))
    try:
        # Two connections that never read their answers: once the socket buffers are
        # full the server is mid-answer on both (WRITING), and neither may be pushed out.
        port = s.address[1]
        hogs = []
        for _ in range(2):
            h = socket.socket()
            h.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            h.connect(("127.0.0.1", port))
            hogs.append(h)
        for h in hogs:  # pipelined scrapes, never read: the server ends up in WRITING
            h.sendall(b"GET /metrics HTTP/1.1\r\n\r\n" * 600)
        states = lambda: [c.state for c in s._loop.conns.values()]  # noqa: E731, SLF001
        wait_for("both mid-answer", lambda: states() == [WRITING, WRITING], 20)
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert c.recv(100).startswith(b"HTTP/1.1 503 Service Unavailable")
        c.close()
        for h in hogs:
            h.close()
        assert s.stats.dropped["max_connections"] >= 1
    finally:
        s.stop()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 405),
        (b"GET /metrics\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\n bad: fold\r\n\r\n", 400),
        (b"GET /readyz HTTP/1.0\r\n\r\n", 200),
    ],
)
def test_bad_and_unusual_requests_get_a_status_not_a_hang(server, request_bytes, status):
    c = socket.create_connection(("127.0.0.1", server.address[1]), timeout=5)
    c.sendall(request_bytes)
    assert c.recv(100).split(b" ")[1] == str(status).encode()
    c.close()


def test_a_request_followed_by_a_half_close_is_still_answered(server):
    c = socket.create_connection(("127.0.0.1", server.address[1]), timeout=5)
    c.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
    c.shutdown(socket.SHUT_WR)  # as `printf ... | nc` does
    data = b""
    while chunk := c.recv(4096):
        data += chunk
    c.close()
    assert data.startswith(b"HTTP/1.1 200 OK")  # answered, and then closed: recv ended
    assert data.endswith(b"alive; ok\n")


def test_endless_blank_lines_are_a_head_that_never_ends(server):
    # Blank lines before a request are allowed (RFC 9112), but they count against the
    # head's bytes: a stream of them is cut off with 431, not stripped for free forever.
    c = socket.create_connection(("127.0.0.1", server.address[1]), timeout=5)
    try:
        try:
            for _ in range(HEAD_BYTES // 1024 + 2):
                c.sendall(b"\r\n" * 512)
        except OSError:
            pass  # answered and closed already
        assert c.recv(100).startswith(b"HTTP/1.1 431")
    finally:
        c.close()
    assert server.stats.dropped["head_too_large"] == 1
    # A few blank lines before a request are still fine.
    c = socket.create_connection(("127.0.0.1", server.address[1]), timeout=5)
    c.sendall(b"\r\n\n\r\nGET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert c.recv(100).startswith(b"HTTP/1.1 200 OK")
    c.close()


def test_a_request_that_breaks_the_server_closes_that_connection_not_the_loop(
    server, monkeypatch
):
    import qbt_vpn_watchdog.http_server.answers as answers

    real = answers.parse_head

    def parse_head(raw: bytes):
        if b"/boom" in raw:
            raise RuntimeError("a bug no test foresaw")
        return real(raw)

    monkeypatch.setattr(answers, "parse_head", parse_head)
    port = server.address[1]
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    c.sendall(b"GET /boom HTTP/1.1\r\n\r\n")
    assert c.recv(100) == b""  # closed, no answer
    c.close()
    kept = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    assert get(kept, "/healthz") == 200
    kept.close()
