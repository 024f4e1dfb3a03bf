"""qBittorrent's Web API through qbittorrent-api: one fetch per cycle, and the torrent actions.

Errors are sorted at this boundary into ``SourceError`` kinds:
  ``login``         wrong credentials, the "banned" 403, or a login attempt held
                    back by the back-off below
  ``password_file`` the password file cannot be read (no login was tried: no back-off)
  ``local_resource`` the watchdog ran out of file descriptors or memory (LocalResourceError)
  ``unreachable``   refused, timed out, no route
  ``bad_response``  not JSON, an unexpected shape, an HTTP error status
  ``not_stopped`` / ``not_started`` / ``not_applied``
                    an action was sent twice and qBittorrent still does not show it

**Logins are never retried in a loop.** qBittorrent bans a client address for
an hour after 5 failed logins (``WebUI\\MaxAuthenticationFailCount``), and the
ban also locks the user out from that address. After a failed login no request
at all is sent (any request could trigger qbittorrent-api's automatic
re-login) until the password file's content changes, or the back-off passed:
10 minutes after the first failure, doubling up to an hour. After a "banned"
answer the wait is at least the hour the ban lasts. The back-off is kept per
WebUI and user for the life of the process, so a config reload does not earn
a fresh attempt. At most one login is
attempted per ``state()``; a session cookie is kept across cycles, and
qbittorrent-api re-logs in once when it gets a 403 (an expired session).

The password is read through ``password_reader`` at each login and never kept
except as a salted hash of the one that failed. No message built here contains
it: messages are composed from our own words, never from the library's
exception text (whose request object holds the login form).

The package, one job per module:
  login.py      the login gate (the back-off above), one per WebUI and user
  maindata.py   sync/maindata increments and torrents/info, shape-checked
  client.py     the qbittorrent-api client, the logged-in session, errors sorted
  torrents.py   torrent states; a stop or start sent again once when not shown
  adapter.py    ``Qbittorrent``: what the watchdog calls (state, stop, start, bind)
Import from here; the modules are how the package is arranged.
"""

from __future__ import annotations

from qbt_vpn_watchdog.sources.qbittorrent.adapter import Qbittorrent
from qbt_vpn_watchdog.sources.qbittorrent.client import (
    MAX_ANSWER_BYTES,
    NO_PROXIES,
    PROBE_BYTES,
    VERSION_TTL,
    _Client,
    _sort,
    _WebSession,
    safe_url,
    webui_probe,
)
from qbt_vpn_watchdog.sources.qbittorrent.login import (
    BAN_SECONDS,
    BANNED,
    LOGIN_BACKOFF_MAX,
    LOGIN_BACKOFF_MIN,
    LoginGate,
    _gates,
    login_gate,
)
from qbt_vpn_watchdog.sources.qbittorrent.maindata import MainData, _Shape, parse_tags
from qbt_vpn_watchdog.sources.qbittorrent.torrents import (
    DEFAULT_TAG,
    NOT_ACTIVE_STATES,
    SEND_ATTEMPTS,
    STOPPED_STATES,
    UNCONFIRMABLE_STATES,
    is_active,
    poll_until_empty,
    send_until_shown,
)

__all__ = [
    "BANNED", "BAN_SECONDS", "DEFAULT_TAG", "LOGIN_BACKOFF_MAX", "LOGIN_BACKOFF_MIN", "NOT_ACTIVE_STATES",
    "MAX_ANSWER_BYTES", "NO_PROXIES", "PROBE_BYTES", "SEND_ATTEMPTS", "STOPPED_STATES", "UNCONFIRMABLE_STATES", "VERSION_TTL",
    "LoginGate", "MainData", "Qbittorrent", "_Client", "_Shape", "_WebSession", "_gates", "_sort",
    "is_active", "login_gate", "parse_tags", "poll_until_empty", "safe_url", "send_until_shown",
    "webui_probe",
]  # fmt: skip
