"""The event loop: one thread, one selector, every connection; deadlines, reading, writing."""

from __future__ import annotations

import logging
import queue
import selectors
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING

from qbt_vpn_watchdog.http_server.answers import _Answers
from qbt_vpn_watchdog.http_server.bounds import (
    BACKLOG,
    CHECKING,
    HANDSHAKE,
    IDLE,
    READING,
    WRITING,
    Limits,
    _Conn,
)
from qbt_vpn_watchdog.http_server.connections import _Connections
from qbt_vpn_watchdog.web_security import Pending

if TYPE_CHECKING:
    from qbt_vpn_watchdog.http_server.server import HttpServer

log = logging.getLogger("qbt_vpn_watchdog.http_server")  # one logger name for the server


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
                            self._guarded(conn, self._io, conn, events)
                self._finish_checks()
                ready, self.ready = self.ready, []
                for conn in ready:  # one request per connection per turn
                    if conn.sock in self.conns:
                        self._guarded(conn, self._next_request, conn)
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

    def _guarded(self, conn: _Conn, fn, *args) -> None:
        """One connection's work: an exception (a bug, or a request no one foresaw)
        closes that connection, never the loop that serves every other one."""
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - see above
            if not self._bug_logged:
                self._bug_logged = True
                log.exception("http: dropped a connection from %s (a bug; logged once)", conn.client)
            self._close(conn)

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
        if not isinstance(conn.sock, ssl.SSLSocket) and not self._start_tls(conn):
            return
        try:
            conn.sock.do_handshake()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
            return
        except (OSError, ssl.SSLError, ValueError):
            # A TLS version too old, an unknown CA, garbage: the client's problem.
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
