"""The connection table of the loop: accepting within the cap, pushing out, closing.

Mixed into ``loop._Loop``, which owns the selector and the listener.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import ssl
import time
from typing import TYPE_CHECKING

from qbt_vpn_watchdog.http_server.answers import STATUS, TEXT
from qbt_vpn_watchdog.http_server.bounds import (
    _EVICTABLE,
    ACCEPTS_PER_TURN,
    HANDSHAKE,
    IDLE,
    READING,
    _Conn,
)

if TYPE_CHECKING:
    from qbt_vpn_watchdog.http_server.server import HttpServer

log = logging.getLogger("qbt_vpn_watchdog.http_server")  # one logger name for the server

_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
# Go's net/http answer to plain HTTP on a TLS port, word for word (node_exporter's too).
_PLAIN_TO_TLS = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"


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
        # With TLS the socket is wrapped once the client's first byte is in (_start_tls).
        state = READING if self.owner.security.ssl_context is None else HANDSHAKE
        conn = _Conn(sock, client, state, now, self.limits)
        self.conns[sock] = conn
        self.owner.stats.open = len(self.conns)
        self._want(conn, selectors.EVENT_READ)
        if state == HANDSHAKE:
            self._handshake(conn)

    def _start_tls(self, conn: _Conn) -> bool:
        """Wrap a new connection in TLS once its first byte has come; True when wrapped.

        A first byte that is a letter is plain HTTP sent to the TLS port (a scrape
        job left at ``scheme: http``): it is answered as Go's servers, node_exporter
        among them, answer it, a 400 that says so, not a reset the operator has to
        decode. A TLS record starts with a byte below 0x20.
        """
        try:
            first = conn.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return False  # stays registered for reading
        except OSError:
            self._drop(conn, "tls")
            return False
        if not first:  # closed before a byte
            self._drop(conn, "tls")
            return False
        ctx = self.owner.security.ssl_context
        if ctx is None:  # a reload turned TLS off since the accept: plain HTTP now
            conn.state = READING
            return False
        if first.isalpha():
            try:
                # What the request sent so far is read first: closing with unread bytes
                # would reset the connection and lose the answer (Go reads a buffer too).
                conn.sock.recv(self.limits.head_bytes)
                conn.sock.send(_PLAIN_TO_TLS)
            except OSError:
                pass
            self._drop(conn, "tls")
            return False
        self._want(conn, 0)
        self.conns.pop(conn.sock, None)
        try:
            conn.sock = ctx.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ssl.SSLError):
            try:
                conn.sock.close()
            except OSError:
                pass
            self.owner.stats.dropped["tls"] += 1
            self.owner.stats.open = len(self.conns)
            return False
        self.conns[conn.sock] = conn
        self._want(conn, selectors.EVENT_READ)
        return True

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
