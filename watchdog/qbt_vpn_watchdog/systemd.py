"""The sd_notify protocol, by hand (it is small and documented stable: sd_notify(3)).

A notification is one datagram of newline-separated ``KEY=value`` lines sent
to the AF_UNIX socket named by ``$NOTIFY_SOCKET``: a filesystem path, or an
abstract socket written ``@name`` (the ``@`` stands for a leading NUL byte).
Without ``$NOTIFY_SOCKET`` (not started by systemd, or ``Type=simple``) every
call is a no-op.

The watchdog (``WatchdogSec=``) is enabled when ``$WATCHDOG_USEC`` is set and
``$WATCHDOG_PID`` is unset or equals our pid (sd_watchdog_enabled(3)): systemd
sets ``WATCHDOG_PID`` so a child that inherited the environment does not
ping on the main process's behalf.

Nothing here raises into the caller: a notification that cannot be sent is
logged once and dropped (the service keeps doing its job; systemd notices the
missing ``WATCHDOG=1`` if it matters).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qbt_vpn_watchdog.config import Config

log = logging.getLogger(__name__)


# The calls one cycle of remediation can make, each within
# remediation.action_timeout (actions.Remediator.step): reading the torrents it
# holds (until qBittorrent has answered once), stop_torrents, restart_tunnel
# (tier 2 runs the unit restart) and rebind, the last three in one cycle when
# an incident starts with qBittorrent's binding lost too.
ACTIONS_PER_CYCLE = 4


def watchdog_sec(interval: float, check_timeouts: Iterable[float], action_timeout: float) -> int:
    """The ``WatchdogSec=`` that only a stuck loop outlasts (also the NixOS default's formula).

    ``WATCHDOG=1`` is sent once per completed cycle: allow three intervals, a
    cycle in which every check runs into its timeout, and every action a cycle
    can run (``ACTIONS_PER_CYCLE``) running into its own.
    """
    return math.ceil(3 * interval + sum(check_timeouts) + ACTIONS_PER_CYCLE * action_timeout)


def _address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        # Abstract namespace: a leading NUL, no trailing NUL.
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    # sd_notify(3) accepts only absolute paths and '@' (newer systemd also
    # vsock: addresses, which a host service never gets).
    return None


def _one_line(text: str, limit: int = 512) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Notifier:
    """Sends sd_notify messages; every method is a no-op without a socket."""

    def __init__(
        self,
        socket_path: str | None = None,
        watchdog_usec: int | None = None,
    ) -> None:
        self.socket_path = socket_path or None
        self._address = _address(socket_path or "")
        if socket_path and self._address is None:
            log.warning(
                "NOTIFY_SOCKET=%r is not an absolute path or @abstract name; ignored", socket_path
            )
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self._failed_once = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC", "")
        wd_pid = env.get("WATCHDOG_PID", "")
        if raw:
            try:
                usec = int(raw)
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not a number; watchdog disabled", raw)
            if wd_pid:
                try:
                    if int(wd_pid) != os.getpid():
                        usec = None  # meant for another process
                except ValueError:
                    usec = None
        return cls(env.get("NOTIFY_SOCKET") or None, usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """systemd's watchdog timeout in seconds (ping well within it), or None."""
        if self._address is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 1e6

    # --- the messages ---------------------------------------------------------

    def warn_if_too_short(self, config: Config, checks: Iterable[str]) -> None:
        """Log when WatchdogSec= is less than ``watchdog_sec()`` of ``config`` running ``checks``."""
        wd = self.watchdog_interval
        interval, action_timeout = config.watchdog.interval, config.remediation.action_timeout
        timeouts = [config.check(n).timeout for n in checks]
        need = watchdog_sec(interval, timeouts, action_timeout)
        if wd is not None and wd < need:
            log.warning(
                "WatchdogSec=%g s does not cover the worst cycles (3 x interval %g s + every "
                "check timeout, %g s in all + %d actions x action_timeout %g s): a slow but "
                "healthy cycle, or one that stops torrents, restarts the tunnel and rebinds "
                "qBittorrent, may get the service killed mid-incident; use WatchdogSec=%d or more",
                wd, interval, sum(timeouts), ACTIONS_PER_CYCLE, action_timeout, need,
            )  # fmt: skip

    def ready(self, status: str | None = None) -> bool:
        return self._send_lines(["READY=1"], status)

    def status(self, line: str) -> bool:
        return self._send_lines([], line)

    def watchdog(self, status: str | None = None) -> bool:
        """``WATCHDOG=1``; sent only when the watchdog applies to this process."""
        lines = ["WATCHDOG=1"] if self.watchdog_interval is not None else []
        if not lines and status is None:
            return False
        return self._send_lines(lines, status)

    def stopping(self, status: str | None = None) -> bool:
        return self._send_lines(["STOPPING=1"], status)

    def reloading(self, status: str | None = None) -> bool:
        # Type=notify-reload (systemd >= 253) wants MONOTONIC_USEC with RELOADING=1
        # to tell this reload from an earlier one; older systemd ignores it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send_lines(["RELOADING=1", f"MONOTONIC_USEC={usec}"], status)

    def notify(self, message: str) -> bool:
        """Send a raw message (``KEY=value`` lines); False when not sent."""
        if self._address is None or not message:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode("utf-8", "replace"), self._address)
        except OSError as e:
            if not self._failed_once:
                self._failed_once = True
                log.warning(
                    "cannot send sd_notify message to %s: %s (further failures not logged)",
                    self.socket_path,
                    e,
                )
            self._close()
            return False
        return True

    def close(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _send_lines(self, lines: list[str], status: str | None) -> bool:
        if status is not None:
            lines = [*lines, "STATUS=" + _one_line(status)]
        return self.notify("\n".join(lines))
