"""The server's bounds and counts: Limits and their defaults, HttpStats, a connection's record.

The defaults and why they are what they are: the package's docstring
(qbt_vpn_watchdog/http_server/__init__.py) and docs/exporter.md.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qbt_vpn_watchdog.web_security import AuthCounters, Gate

if TYPE_CHECKING:
    from qbt_vpn_watchdog.http_server.request import _Head

MAX_CONNECTIONS = 40  # node_exporter's --web.max-requests default
HEAD_TIMEOUT = 5.0  # s for a whole request head (and the TLS handshake) from its first byte
HEAD_BYTES = 16384  # a request head longer than this gets 431
IDLE_TIMEOUT = 330.0  # s a kept-alive connection may wait for its next request
WRITE_TIMEOUT = 10.0  # s for a client to take our answer
BACKLOG = 512
ACCEPTS_PER_TURN = 64  # a connect storm cannot keep the loop from the other connections

# Why a connection was closed before it got its answer (qbtvpn_http_connections_dropped_total).
DROP_REASONS = ("max_connections", "head_timeout", "head_too_large", "bad_request", "tls")


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
        "head", "gate", "registered", "eof", "blank",
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
        self.blank = 0  # blank-line bytes before the current request (count against head_bytes)
