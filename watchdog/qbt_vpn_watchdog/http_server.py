"""The HTTP endpoints: /metrics, /healthz, /readyz and a landing page at /.

Bounded by construction, so that nothing a client does to this port can
change what the checks see (a flood of slow connections once took every file
descriptor of the process, and the checks' own sockets failed with EMFILE):

* one thread runs an event loop (``selectors``) for every connection: no
  thread per connection; a second thread runs password checks, one at a time;
* at most ``max_connections`` connections (``web.max_connections``, 40 by
  default, as node_exporter's ``--web.max-requests``), so the server holds at
  most max_connections + 4 file descriptors, whatever the flood. At the cap a
  new connection takes the place of the oldest one that has not finished
  sending its request (then the oldest idle kept-alive one); when every
  connection is in the middle of a request, the new one gets a 503 at once.
  A scraper's kept-alive connection is therefore never pushed out by clients
  that have not sent a whole request, and a new scraper gets in too;
* the whole request head (the TLS handshake included) must arrive within
  ``HEAD_TIMEOUT`` of the first byte, in at most ``HEAD_BYTES``: one deadline
  per request, not a timeout re-armed by every byte; a longer head gets 431
  and the connection is closed, so a connection never holds more than
  HEAD_BYTES of ours. Bodies are never read (GET and HEAD only);
* authentication (``web_security.Gate``) is decided from the head alone,
  before any work; the password check itself runs in the checker thread, so a
  guessing client cannot stall the loop;
* kept-alive connections stay ``IDLE_TIMEOUT`` (longer than Prometheus's own
  5-minute keep-alive, far longer than a 15 s scrape interval), so a scrape is
  one request on an open connection; a listen backlog of ``BACKLOG``.

Why in the daemon's process and not a separate unprivileged one: the bounds
above make the server's cost fixed (descriptors, memory, one thread), and a
second process would need the rendered metrics handed over, its own
supervision and its own failure modes; the separation buys nothing the cap
does not already give (docs/design.md).

/metrics negotiates the format from the Accept header (OpenMetrics for a
Prometheus that asks for it, else the text format 0.0.4) and gzips when
Accept-Encoding allows, through prometheus_client's own ``choose_encoder`` and
``gzip_accepted``; the bytes are rendered once per cycle by the loop
(``metrics.Exposition``), so a scrape only writes them. A reload swaps
``HttpServer.security``: the next connection uses the new certificate, the
next request the new users.
"""

from __future__ import annotations

import email.utils
import errno
import logging
import os
import queue
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from prometheus_client.exposition import gzip_accepted

from qbt_vpn_watchdog import __version__
from qbt_vpn_watchdog.web_security import AuthCounters, Gate, Pending, WebSecurity

log = logging.getLogger(__name__)

# The exposition of the current snapshot for an Accept header, gzipped or not:
# (body, Content-Type).
RenderFn = Callable[[str, bool], tuple[bytes, str]]
HealthFn = Callable[[], tuple[int, str]]  # (HTTP status, one line)

MAX_CONNECTIONS = 40  # node_exporter's --web.max-requests default
HEAD_TIMEOUT = 5.0  # s for a whole request head (and the TLS handshake) from its first byte
HEAD_BYTES = 16384  # a request head longer than this gets 431
IDLE_TIMEOUT = 330.0  # s a kept-alive connection may wait for its next request
WRITE_TIMEOUT = 10.0  # s for a client to take our answer
BACKLOG = 512
ACCEPTS_PER_TURN = 64  # a connect storm cannot keep the loop from the other connections

# Why a connection was closed before it got its answer (qbtvpn_http_connections_dropped_total).
DROP_REASONS = ("max_connections", "head_timeout", "head_too_large", "bad_request", "tls")

TEXT = "text/plain; charset=utf-8"
STATUS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
}  # fmt: skip
# Relative links: the page works behind a reverse proxy's path prefix too.
LANDING = f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>qbt-vpn-watchdog</title></head>
<body>
<h1>qbt-vpn-watchdog</h1>
<p>Watchdog and Prometheus exporter for a qBittorrent box confined to a WireGuard tunnel.
Version {__version__}.</p>
<ul>
<li><a href="metrics">Metrics</a> (Prometheus text format, or OpenMetrics when asked for)</li>
<li><a href="healthz">Health</a> (200 while the poll loop is alive; the VPN's state in the text)</li>
<li><a href="readyz">Readiness</a> (200 while the tunnel is safe and no torrent is held;
503 otherwise: for uptime monitors)</li>
</ul>
</body>
</html>
""".encode()
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass
class HttpStats:
    """What the server counts, read by the metrics (plain ints: one writer, the loop)."""

    open: int = 0
    dropped: Counter = field(default_factory=Counter)  # DROP_REASONS -> n
    auth: AuthCounters = field(default_factory=AuthCounters)


@dataclass(frozen=True)
class Limits:
    max_connections: int = MAX_CONNECTIONS
    head_timeout: float = HEAD_TIMEOUT
    head_bytes: int = HEAD_BYTES
    idle_timeout: float = IDLE_TIMEOUT
    write_timeout: float = WRITE_TIMEOUT


# Connection states, in the order they are pushed out at the cap (lowest first).
HANDSHAKE, READING, IDLE, WRITING, CHECKING = range(5)
_EVICTABLE = (HANDSHAKE, READING, IDLE)


class _Conn:
    __slots__ = (
        "sock", "client", "state", "deadline", "since", "buf", "out", "close_after",
        "head", "gate", "registered", "eof",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, client: str, state: int, now: float, limits: Limits):
        self.sock = sock
        self.client = client
        self.state = state
        self.since = now  # when the current state began
        self.deadline = now + limits.head_timeout
        self.buf = bytearray()
        self.out: memoryview | None = None
        self.close_after = False
        self.head: _Head | None = None  # the request waiting for its password check
        self.gate: Gate | None = None  # the gate that asked for it (a reload may swap gates)
        self.registered = 0  # the selector events it is registered for
        self.eof = False  # the client closed its sending side (its last request may be whole)


@dataclass(frozen=True)
class _Head:
    method: str
    path: str
    version: str
    headers: dict[str, str]


class _BadRequest(Exception):
    pass


def parse_head(raw: bytes) -> _Head:
    """The request line and headers of one request head (without the blank line)."""
    lines = raw.decode("latin-1").split("\n")
    parts = lines[0].rstrip("\r").split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise _BadRequest("bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        line = line.rstrip("\r")
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise _BadRequest("bad header line")
        headers[name.lower()] = value.strip()
    return _Head(parts[0], parts[1], parts[2], headers)


class _Connections:
    """The connection table of the loop: accepting within the cap, pushing out, closing."""

    owner: HttpServer
    listener: socket.socket
    sel: selectors.BaseSelector
    conns: dict
    accept_paused_until: float
    _emfile_logged: float

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, addr = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Descriptors ran out elsewhere in the process: stop accepting for a
                    # moment instead of spinning on a listener that stays readable.
                    now = time.monotonic()
                    if now - self._emfile_logged > 60:
                        self._emfile_logged = now
                        log.warning("http: cannot accept a connection: %s; pausing 0.5 s", e)
                    self.sel.unregister(self.listener)
                    self.accept_paused_until = now + 0.5
                    return
                continue  # ECONNABORTED and the like: that client is gone
            now = time.monotonic()
            if len(self.conns) >= self.limits.max_connections and not self._evict_one():
                self.owner.stats.dropped["max_connections"] += 1  # counted before it is told
                try:
                    sock.setblocking(False)
                    sock.send(_BUSY)
                except OSError:
                    pass
                sock.close()
                continue
            self._add(sock, addr[0], now)

    def _evict_one(self) -> bool:
        """Close the connection a new one may replace; False when there is none."""
        victims = [c for c in self.conns.values() if c.state in _EVICTABLE]
        if not victims:
            return False
        # Not yet a whole request first (oldest first), then the longest idle.
        victim = min(victims, key=lambda c: (c.state == IDLE, c.since))
        if victim.state == IDLE:
            self._close(victim)
        else:
            self._drop(victim, "max_connections")
        return True

    def _add(self, sock: socket.socket, client: str, now: float) -> None:
        sock.setblocking(False)
        try:
            # Headers and body go out in one write, but the client's delayed ACK and
            # Nagle would still add 40 ms to a kept connection's scrape.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        ctx = self.owner.security.ssl_context
        state = READING
        if ctx is not None:
            try:
                sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (OSError, ssl.SSLError):
                sock.close()
                self.owner.stats.dropped["tls"] += 1
                return
            state = HANDSHAKE
        conn = _Conn(sock, client, state, now, self.limits)
        self.conns[sock] = conn
        self.owner.stats.open = len(self.conns)
        self._want(conn, selectors.EVENT_READ)
        if state == HANDSHAKE:
            self._handshake(conn)

    def _want(self, conn: _Conn, events: int) -> None:
        if events == conn.registered:
            return
        if conn.registered and events:
            self.sel.modify(conn.sock, events, conn)
        elif events:
            self.sel.register(conn.sock, events, conn)
        else:
            self.sel.unregister(conn.sock)
        conn.registered = events

    def _close(self, conn: _Conn) -> None:
        if self.conns.pop(conn.sock, None) is None:
            return
        self._want(conn, 0)
        try:
            conn.sock.close()
        except OSError:
            pass
        conn.buf = bytearray()
        conn.out = None
        self.owner.stats.open = len(self.conns)

    def _drop(self, conn: _Conn, reason: str, answer: int | None = None) -> None:
        self.owner.stats.dropped[reason] += 1
        if answer is not None and conn.state != HANDSHAKE:
            try:  # best effort, one non-blocking write: the client may not read at all
                conn.sock.send(self._response(answer, f"{STATUS[answer].lower()}\n".encode(),
                                              TEXT, False, close=True))  # fmt: skip
            except (OSError, ssl.SSLError):
                pass
        self._close(conn)


class _Answers:
    """HTTP's side of the loop: a whole request head -> authentication -> an answer.

    Mixed into ``_Loop``, which owns the sockets (``_answer`` queues the bytes there).
    """

    owner: HttpServer
    ready: list
    done: queue.SimpleQueue
    _bug_logged: bool

    def _next_request(self, conn: _Conn) -> None:
        """Handle the buffered request, if its head is whole."""
        buf = conn.buf
        while buf[:2] == b"\r\n" or buf[:1] == b"\n":  # blank lines before a request
            del buf[: 2 if buf[:1] == b"\r" else 1]
        end = buf.find(b"\r\n\r\n")
        cut = end + 4
        alt = buf.find(b"\n\n")
        if alt != -1 and (end == -1 or alt < end):
            end, cut = alt, alt + 2
        if end == -1 or end > self.limits.head_bytes:
            if len(buf) > self.limits.head_bytes:
                self._drop(conn, "head_too_large", 431)
            elif conn.eof:
                self._close(conn)  # half a request, and no more will come
            return
        raw = bytes(buf[:end])
        del buf[:cut]
        try:
            head = parse_head(raw)
        except _BadRequest:
            self._drop(conn, "bad_request", 400)
            return
        self._dispatch(conn, head)

    def _dispatch(self, conn: _Conn, head: _Head) -> None:
        keep = head.version == "HTTP/1.1" and head.headers.get("connection", "").lower() != "close"
        if "content-length" in head.headers and head.headers["content-length"] != "0":
            keep = False  # a body we will not read: answer, then close
        if "transfer-encoding" in head.headers:
            keep = False
        conn.close_after = not keep or conn.eof
        if head.method not in ("GET", "HEAD"):
            self._answer(conn, 405, b"only GET and HEAD\n", TEXT, False, {"Allow": "GET, HEAD"})
            return
        gate = self.owner.gate
        verdict, extra = gate.decide(head.headers.get("authorization"), conn.client)
        if verdict == "ok":
            self._serve(conn, head)
        elif verdict == "check":
            conn.state, conn.head, conn.gate = CHECKING, head, gate
            self._want(conn, 0)
            self.owner.checker.submit(self, conn, extra)
        elif verdict == "throttled":
            self._answer(conn, 429, b"too many failed logins: retry later\n", TEXT,
                         head.method == "HEAD", {"Retry-After": str(extra)})  # fmt: skip
        else:
            self._unauthorized(conn, head)

    def _finish_checks(self) -> None:
        while True:
            try:
                conn, pending, ok = self.done.get_nowait()
            except queue.Empty:
                return
            passed = (conn.gate or self.owner.gate).settle(pending, ok)
            head, conn.head, conn.gate = conn.head, None, None
            if conn.sock not in self.conns or head is None:
                continue
            if passed:
                self._serve(conn, head)
            else:
                self._unauthorized(conn, head)

    def _unauthorized(self, conn: _Conn, head: _Head) -> None:
        challenge = {"WWW-Authenticate": self.owner.security.challenge}
        self._answer(conn, 401, b"unauthorized\n", TEXT, head.method == "HEAD", challenge)

    def _serve(self, conn: _Conn, head: _Head) -> None:
        try:
            self._route(conn, head)
        except Exception:  # noqa: BLE001 - one failed answer, never the loop
            if not self._bug_logged:
                self._bug_logged = True
                log.exception("http: cannot answer %s (a bug; logged once)", head.path)
            conn.close_after = True
            self._answer(conn, 500, b"internal error\n", TEXT, head.method == "HEAD")

    def _route(self, conn: _Conn, head: _Head) -> None:
        owner, is_head = self.owner, head.method == "HEAD"
        path = urlsplit(head.path).path
        if path == "/metrics":
            gz = gzip_accepted(head.headers.get("accept-encoding", ""))
            body, ctype = owner.render(head.headers.get("accept", ""), gz)
            extra = {"Vary": "Accept, Accept-Encoding"}
            if gz:
                extra["Content-Encoding"] = "gzip"
            self._answer(conn, 200, body, ctype, is_head, extra)
        elif path == "/healthz":
            code, text = owner.health()
            self._answer(conn, code, (text + "\n").encode(), TEXT, is_head)
        elif path == "/readyz":
            code, text = owner.ready()
            self._answer(conn, code, (text + "\n").encode(), TEXT, is_head)
        elif path == "/":
            self._answer(conn, 200, LANDING, "text/html; charset=utf-8", is_head)
        else:
            self._answer(conn, 404, b"not found: try /metrics, /healthz or /readyz\n", TEXT,
                         is_head)  # fmt: skip

    def _response(
        self, code: int, body: bytes, ctype: str, is_head: bool, extra=None, close=False
    ) -> bytes:
        lines = [
            f"HTTP/1.1 {code} {STATUS.get(code, 'Unknown')}",
            "Server: qbt-vpn-watchdog",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",  # HEAD: what GET would send
            "Cache-Control: no-store",
            *(f"{k}: {v}" for k, v in (extra or {}).items()),
            "Connection: close" if close else f"Keep-Alive: timeout={int(self.limits.idle_timeout)}",
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if is_head else head + body


class _Loop(_Connections, _Answers):
    """One listening socket and its connections, served by one thread."""

    def __init__(self, owner: HttpServer, address: tuple[str, int]) -> None:
        self.owner = owner
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(address)
            self.listener.listen(BACKLOG)
            self.listener.setblocking(False)
            self._wake_r, self._wake_w = socket.socketpair()
        except OSError:
            self.listener.close()
            raise
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.conns: dict[socket.socket, _Conn] = {}
        self.done: queue.SimpleQueue[tuple[_Conn, Pending, bool]] = queue.SimpleQueue()
        self.ready: list[_Conn] = []  # connections with a whole request already buffered
        self.stopping = False
        self.accept_paused_until = 0.0
        self._emfile_logged = -1e9
        self._bug_logged = False
        self.thread = threading.Thread(target=self.run, name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.getsockname()[:2]

    @property
    def limits(self) -> Limits:
        return self.owner.limits  # a reload may change them; every deadline reads them anew

    def wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # already awake (full), or closed

    # --- the loop ------------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self.stopping:
                now = time.monotonic()
                timeout = 0.0 if self.ready else self._next_deadline(now) - now
                for key, events in self.sel.select(max(0.0, min(timeout, 1.0))):
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        self._drain_wake()
                    else:
                        conn = key.data
                        if conn.sock in self.conns:
                            self._io(conn, events)
                self._finish_checks()
                ready, self.ready = self.ready, []
                for conn in ready:  # one request per connection per turn
                    if conn.sock in self.conns:
                        self._next_request(conn)
                self._expire(time.monotonic())
                if self.accept_paused_until and time.monotonic() >= self.accept_paused_until:
                    self.accept_paused_until = 0.0
                    self.sel.register(self.listener, selectors.EVENT_READ, None)
        except Exception:  # noqa: BLE001 - the loop must not die silently
            log.exception("http: the server loop failed (a bug); /metrics is no longer served")
        finally:
            for conn in list(self.conns.values()):
                self._close(conn)
            self.sel.close()
            self.listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _next_deadline(self, now: float) -> float:
        nearest = now + 1.0
        for c in self.conns.values():
            if c.state != CHECKING and c.deadline < nearest:
                nearest = c.deadline
        return nearest

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except OSError:
            pass

    def _expire(self, now: float) -> None:
        for c in [c for c in self.conns.values() if c.state != CHECKING and c.deadline <= now]:
            if c.state == IDLE:
                self._close(c)  # a kept-alive connection nobody used: nothing to count
            elif c.state == WRITING:
                self._close(c)
            else:
                self._drop(c, "head_timeout")

    # --- reading -----------------------------------------------------------------------

    def _io(self, conn: _Conn, events: int) -> None:
        if conn.state == HANDSHAKE:
            self._handshake(conn)
        elif conn.state == WRITING:
            self._write(conn)
        elif conn.state in (READING, IDLE):
            self._read(conn)

    def _handshake(self, conn: _Conn) -> None:
        try:
            conn.sock.do_handshake()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
            return
        except (OSError, ssl.SSLError, ValueError):
            # Plain HTTP to the TLS port, a TLS version too old: the client's problem.
            log.debug("http: TLS handshake with %s failed", conn.client, exc_info=True)
            self._drop(conn, "tls")
            return
        conn.state = READING  # the head deadline set at accept still runs
        self._want(conn, selectors.EVENT_READ)
        self._read(conn)

    def _read(self, conn: _Conn) -> None:
        limit = self.limits.head_bytes
        while True:
            room = limit + 1 - len(conn.buf)
            if room <= 0:
                break
            try:
                chunk = conn.sock.recv(min(room, 16384))
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except (OSError, ssl.SSLError):
                self._close(conn)
                return
            if not chunk:  # the client closed (or half-closed) its end
                if not conn.buf:
                    self._close(conn)
                    return
                conn.eof = True  # answer what it sent, then close
                self._want(conn, 0)
                break
            if conn.state == IDLE:
                conn.state = READING
                now = time.monotonic()
                conn.since, conn.deadline = now, now + self.limits.head_timeout
            conn.buf += chunk
            if not isinstance(conn.sock, ssl.SSLSocket) and len(chunk) < min(room, 16384):
                break  # a plain socket gave what it had; TLS may hold more decrypted bytes
        self._next_request(conn)

    def _answer(self, conn, code, body, ctype, is_head, extra=None) -> None:
        data = self._response(code, body, ctype, is_head, extra, conn.close_after)
        conn.out = memoryview(data)
        conn.state = WRITING
        now = time.monotonic()
        conn.since, conn.deadline = now, now + self.limits.write_timeout
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        out = conn.out
        while out is not None and len(out):
            try:
                n = conn.sock.send(out[:65536])
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                self._want(conn, selectors.EVENT_WRITE)
                conn.out = out
                return
            except (OSError, ssl.SSLError):
                self._close(conn)
                return
            out = out[n:]
        conn.out = None
        if conn.close_after:
            self._close(conn)
            return
        now = time.monotonic()
        conn.state, conn.since, conn.deadline = IDLE, now, now + self.limits.idle_timeout
        self._want(conn, selectors.EVENT_READ)
        if conn.buf:  # pipelined: the next request is already here
            conn.state, conn.deadline = READING, now + self.limits.head_timeout
            self.ready.append(conn)


class _Checker:
    """The thread that runs password checks (bcrypt), one at a time, off the loop."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, loop: _Loop, conn: _Conn, pending: Pending) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="http-auth", daemon=True)
                self._thread.start()
        self._jobs.put((loop, conn, pending, loop.owner.security))

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            loop, conn, pending, security = job
            try:
                ok = security.verify(pending.user, pending.password)
            except Exception:  # noqa: BLE001 - a refused request, not a dead thread
                log.exception("http: the password check failed (a bug)")
                ok = False
            loop.done.put((conn, pending, ok))
            loop.wake()

    def stop(self) -> None:
        self._jobs.put(None)


def _default_ready() -> tuple[int, str]:
    return 200, "ready"


class HttpServer:
    """/metrics, /healthz and /readyz on one address; ``move`` binds another before letting go."""

    def __init__(
        self,
        render: RenderFn,
        health: HealthFn,
        security: WebSecurity | None = None,
        ready: HealthFn | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.render = render
        self.health = health
        self.ready = ready or _default_ready
        self.limits = limits or Limits()
        self.stats = HttpStats()
        self.checker = _Checker()
        self._loop: _Loop | None = None
        self.security = security or WebSecurity()  # swapped by a reload

    @property
    def security(self) -> WebSecurity:
        return self._security

    @security.setter
    def security(self, value: WebSecurity) -> None:
        # A new gate per security: its caches and back-offs belong to those users.
        self._security = value
        self.gate = Gate(value, self.stats.auth)

    @property
    def address(self) -> tuple[str, int] | None:
        return self._loop.address if self._loop else None

    def start(self, address: tuple[str, int]) -> None:
        """Listen on ``address`` (OSError when it cannot) and serve from a thread."""
        self._loop = _Loop(self, address)
        self._loop.thread.start()

    def move(self, address: tuple[str, int]) -> None:
        """Serve on ``address`` instead; on failure (OSError) the old one keeps serving."""
        old = self._loop
        self.start(address)
        if old is not None:
            _stop_loop(old)

    def stop(self) -> None:
        if self._loop is not None:
            _stop_loop(self._loop)
            self._loop = None
        self.checker.stop()
        self.checker = _Checker()


def _stop_loop(loop: _Loop) -> None:
    loop.stopping = True
    loop.wake()
    if loop.thread is not threading.current_thread():
        loop.thread.join(5)


def fd_budget(limits: Limits) -> int:
    """The most descriptors the server holds: listener, wake pair, selector, connections."""
    return limits.max_connections + 4


def open_fds() -> int:
    """Descriptors the process holds now (for tests and the benchmark)."""
    return len(os.listdir("/proc/self/fd"))
