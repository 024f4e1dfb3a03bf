"""An overall deadline for a network exchange, whatever the peer does.

A socket timeout bounds one ``recv``; a peer that sends one byte every 1.5 s
keeps a 2 s socket timeout from ever firing, in a TLS handshake, in a header
line, in a body. ``Deadline`` bounds the whole exchange instead: one reaper
thread for the process keeps the deadlines, and at a deadline it shuts the
watched sockets down (``shutdown(SHUT_RDWR)``), which makes a ``recv`` blocked
in any thread return at once. The code that owned the exchange then sees an
odd error (EOF, ECONNRESET, an SSL error) and asks ``expired`` what it was.

A watched socket is a ``dup`` of the caller's: shutting it down acts on the
connection even after ``ssl.wrap_socket`` has detached the original object,
and closing the dup at the end never closes the caller's connection.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import threading
import time

log = logging.getLogger(__name__)


class Deadline:
    """One exchange's overall deadline (``with Deadline(seconds, what) as d: d.watch(sock)``)."""

    def __init__(self, seconds: float, what: str = "") -> None:
        self.seconds = seconds
        self.what = what
        self.at = time.monotonic() + seconds
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = False

    def left(self) -> float:
        """Seconds left (0 when past)."""
        return max(0.0, self.at - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock``'s connection down at the deadline (at once when it has passed)."""
        try:
            dup = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError as e:
            # No fd left for the dup (EMFILE) or the socket is already closed:
            # the exchange keeps its per-recv timeouts, and whoever runs it is
            # about to meet the same limit.
            log.debug("cannot watch a socket for %s: %s", self.what, e)
            return
        with self._lock:
            if self._done:
                dup.close()
                return
            self._socks.append(dup)
            late = self.expired
        if late:
            _shutdown(dup)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            socks = list(self._socks)
        for s in socks:
            _shutdown(s)

    def close(self) -> None:
        with self._lock:
            self._done = True
            socks, self._socks = self._socks, []
        for s in socks:
            s.close()

    def __enter__(self) -> Deadline:
        _REAPER.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed or never connected: nothing blocks on it


class _Reaper:
    """The one thread that expires deadlines, started on first use."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, d: Deadline) -> None:
        with self._cv:
            heapq.heappush(self._heap, (d.at, next(self._seq), d))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="deadline-reaper", daemon=True
                )
                self._thread.start()
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                at, _, d = self._heap[0]
                now = time.monotonic()
                if at > now:
                    self._cv.wait(at - now)
                    continue
                heapq.heappop(self._heap)
            d._expire()


_REAPER = _Reaper()

# --- the deadline of the request this thread is making (for library code) ----------

_current = threading.local()


def current() -> Deadline | None:
    """The deadline this thread's current exchange runs under (``under()``), if any."""
    return getattr(_current, "deadline", None)


class under:
    """``with under(deadline):`` sockets a library opens or reuses in this thread are
    watched by ``deadline`` (the library's connection class calls ``watch_current``)."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def __enter__(self) -> Deadline:
        self._prev = current()
        _current.deadline = self.deadline
        return self.deadline

    def __exit__(self, *exc: object) -> None:
        _current.deadline = self._prev


def watch_current(sock: socket.socket | None) -> None:
    d = current()
    if d is not None and sock is not None:
        d.watch(sock)
