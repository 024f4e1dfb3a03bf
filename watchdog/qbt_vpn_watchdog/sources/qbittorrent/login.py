"""The login gate: whether a login may be attempted now (see the package doc).

qBittorrent bans a client address for an hour after 5 failed logins, so a
failed login is never retried in a loop: the gate holds the next attempt back
until the password changes or the back-off passed.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable

from qbt_vpn_watchdog.backoff import Backoff

# --- the login back-off -------------------------------------------------------
LOGIN_BACKOFF_MIN = 600.0  # seconds after the first failure


LOGIN_BACKOFF_MAX = 3600.0


BAN_SECONDS = 3600.0  # qBittorrent's default WebUI\BanDuration


class LoginGate:
    """Decides whether a login may be attempted now (pure, clock injected)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        backoff_min: float = LOGIN_BACKOFF_MIN,
        backoff_max: float = LOGIN_BACKOFF_MAX,
    ) -> None:
        self.clock = clock
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self._salt = os.urandom(16)
        self.failures = 0
        self.failed_at: float | None = None
        self.banned = False
        self._failed_fp: bytes | None = None
        self.reason = ""

    def fingerprint(self, password: str) -> bytes:
        return hashlib.blake2b(password.encode(), key=self._salt, digest_size=16).digest()

    def backoff(self) -> float:
        """The wait after the last failure: 10 min, doubling to 1 h; >= 1 h after a ban."""
        if self.failures == 0:
            return 0.0
        backoff = Backoff(self.backoff_min, self.backoff_max).delay(self.failures)
        return max(backoff, BAN_SECONDS) if self.banned else backoff

    def wait_left(self, password: str) -> float:
        """Seconds until a login with this password may be tried; 0 = now."""
        if self.failed_at is None:
            return 0.0
        if self.fingerprint(password) != self._failed_fp:
            return 0.0  # the password file changed: one new attempt is worth it
        return max(0.0, self.failed_at + self.backoff() - self.clock())

    def failed(self, fingerprint: bytes, reason: str, banned: bool = False) -> None:
        """Record a failed login with the password of that ``fingerprint``."""
        self.failures += 1
        self.failed_at = self.clock()
        self.banned = banned
        self._failed_fp = fingerprint
        self.reason = reason

    def succeeded(self) -> None:
        self.failures, self.failed_at, self.banned, self._failed_fp = 0, None, False, None
        self.reason = ""


_gates: dict[tuple[str, str], LoginGate] = {}


_gates_lock = threading.Lock()


def login_gate(url: str, username: str, clock: Callable[[], float]) -> LoginGate:
    """The process-wide gate for this WebUI and user (created with ``clock`` on first use)."""
    with _gates_lock:
        gate = _gates.get((url, username))
        if gate is None:
            gate = _gates[(url, username)] = LoginGate(clock)
        return gate


BANNED = "this address is banned after too many failed logins"


def _is_ban(exc: BaseException) -> bool:
    text = getattr(getattr(exc, "response", None), "text", "") or ""
    return "banned" in text.lower()
