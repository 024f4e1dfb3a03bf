"""HttpServer: the endpoints on one address, moved without a gap; the password checker thread."""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

from qbt_vpn_watchdog.http_server.bounds import HttpStats, Limits, _Conn
from qbt_vpn_watchdog.http_server.loop import _Loop
from qbt_vpn_watchdog.web_model import WebSecurity
from qbt_vpn_watchdog.web_security import Gate, Pending

log = logging.getLogger("qbt_vpn_watchdog.http_server")  # one logger name for the server

# The exposition of the current snapshot for an Accept header, gzipped or not:
# (body, Content-Type).
RenderFn = Callable[[str, bool], tuple[bytes, str]]
HealthFn = Callable[[], tuple[int, str]]  # (HTTP status, one line)


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
