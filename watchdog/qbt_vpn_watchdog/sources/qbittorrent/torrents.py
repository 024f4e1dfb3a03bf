"""Torrent states and the stop/start sending rules (sent again once when not shown)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_fixed,
)

from qbt_vpn_watchdog.sources import TorrentBrief

# One logger for the whole adapter, as before it was a package.
log = logging.getLogger("qbt_vpn_watchdog.sources.qbittorrent")


# --- torrent states -----------------------------------------------------------
# qBittorrent 4.x says "paused", 5.x (Web API >= 2.11.0) says "stopped".
STOPPED_STATES = frozenset({"pausedDL", "pausedUP", "stoppedDL", "stoppedUP"})


# Torrents in these states are left alone by stop_active(): already stopped
# (by the user, or by us and tagged), or "missingFiles", which qBittorrent only
# shows for a torrent it stopped itself. Everything else is "active" and gets
# stopped: downloading/uploading, stalled, queued (a queued torrent starts as
# soon as another stops), checking, metaDL, forced, moving, and "error" (an
# error torrent may still be in libtorrent's upload mode, i.e. connected).
NOT_ACTIVE_STATES = STOPPED_STATES | frozenset({"missingFiles"})


# Stop cannot be confirmed for these: qBittorrent shows the error, not the pause.
UNCONFIRMABLE_STATES = frozenset({"error", "missingFiles"})


def is_active(t: TorrentBrief) -> bool:
    """Would ``stop_active`` stop this torrent? (also observe mode's "would stop N")"""
    return t.state not in NOT_ACTIVE_STATES


DEFAULT_TAG = "watchdog-stopped"


# A stop or start is sent this often at most before it counts as failed.
SEND_ATTEMPTS = 2


def send_until_shown(
    what: str,
    hashes: list[str],
    send: Callable[[list[str]], object],
    left_after: Callable[[list[str]], list[str]],
) -> list[str]:
    """Send ``what`` for ``hashes``; ``left_after(sent)`` says which do not show it yet.

    Those are sent again, ``SEND_ATTEMPTS`` times in all (a pause sent about
    1 s after a resume was seen to be lost; sending it again fixes that).
    Returns the hashes that never showed it.
    """
    left = list(hashes)

    def attempt() -> list[str]:
        nonlocal left
        send(left)
        left = left_after(left)
        return left

    def resend(rs: RetryCallState) -> None:
        log.warning("qBittorrent: %d torrent(s) did not %s; re-sending", len(left), what)

    return Retrying(
        stop=stop_after_attempt(SEND_ATTEMPTS),
        retry=retry_if_result(bool),
        before_sleep=resend,
        retry_error_callback=lambda rs: rs.outcome.result(),
    )(attempt)


def poll_until_empty(
    left_now: Callable[[], list[str]], timeout: float, interval: float
) -> list[str]:
    """Ask ``left_now()`` every ``interval`` s until it is empty or ``timeout`` s passed."""
    return Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        retry=retry_if_result(bool),
        retry_error_callback=lambda rs: rs.outcome.result(),
    )(left_now)
