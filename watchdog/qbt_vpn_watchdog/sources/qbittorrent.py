"""qBittorrent's Web API through qbittorrent-api: one fetch per cycle, and the torrent actions.

Errors are sorted at this boundary into ``SourceError`` kinds:
  ``login``         wrong credentials, the "banned" 403, an unreadable password file,
                    or a login attempt held back by the back-off below
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
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

import qbittorrentapi
import requests
from qbittorrentapi import exceptions as qe
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_fixed,
)

from qbt_vpn_watchdog.backoff import Backoff
from qbt_vpn_watchdog.sources import HttpResponse, QbtState, SourceError, TorrentBrief

log = logging.getLogger(__name__)

# --- torrent states -----------------------------------------------------------
# qBittorrent 4.x says "paused", 5.x (Web API >= 2.11.0) says "stopped".
STOPPED_STATES = frozenset({"pausedDL", "pausedUP", "stoppedDL", "stoppedUP"})
# Torrents in these states are left alone by stop_active(): already stopped
# (by the user, or by us and tagged), or "missingFiles", which qBittorrent only
# shows for a torrent it stopped itself. Everything else is "active" and gets
# stopped: downloading/uploading, stalled, queued (a queued torrent starts as
# soon as another stops), checking, metaDL, forced, moving, and "error" (an
# error torrent may still be in libtorrent's upload mode, i.e. connected).
#
# "checkingResumeData" is what every torrent shows while qBittorrent starts and
# loads its resume data, a torrent the user stopped included: not yet known,
# so left alone too (the next sweep stops it once it shows what it is). Seen in
# the lab when a VPN-Confinement unit restart restarted qBittorrent during a
# hold: the user's stopped torrent was tagged, then resumed with ours.
NOT_ACTIVE_STATES = STOPPED_STATES | frozenset({"missingFiles", "checkingResumeData"})
# Stop cannot be confirmed for these: qBittorrent shows the error, not the pause.
UNCONFIRMABLE_STATES = frozenset({"error", "missingFiles"})


def is_active(t: TorrentBrief) -> bool:
    """Would ``stop_active`` stop this torrent? (also observe mode's "would stop N")"""
    return t.state not in NOT_ACTIVE_STATES


DEFAULT_TAG = "watchdog-stopped"
# requests takes proxies from the environment unless told None per scheme.
NO_PROXIES = {"http": None, "https": None, "all": None}

# --- the login back-off -------------------------------------------------------
LOGIN_BACKOFF_MIN = 600.0  # seconds after the first failure
LOGIN_BACKOFF_MAX = 3600.0
BAN_SECONDS = 3600.0  # qBittorrent's default WebUI\BanDuration
# A stop or start is sent this often at most before it counts as failed.
SEND_ATTEMPTS = 2


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


def safe_url(url: str) -> str:
    """The URL without user:password@, for messages."""
    u = urlsplit(url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, netloc, u.path, "", ""))


def parse_tags(value: object) -> tuple[str, ...]:
    """qBittorrent's "a, b" tag string as a tuple."""
    if not isinstance(value, str):
        raise _Shape("torrent tags is not a string")
    return tuple(t.strip() for t in value.split(",") if t.strip())


class _Shape(ValueError):
    """An answer that parsed but has an unexpected shape."""


def _get(d: object, key: str, typ: type | tuple[type, ...], what: str):
    if not isinstance(d, dict):
        raise _Shape(f"{what} is not a JSON object")
    if key not in d:
        raise _Shape(f"{what} has no {key!r}")
    v = d[key]
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise _Shape(f"{what}[{key!r}] is {type(v).__name__}, expected {_tname(typ)}")
    return v


def _tname(typ) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def _torrents(raw: object) -> tuple[TorrentBrief, ...]:
    if not isinstance(raw, list):
        raise _Shape("torrents/info is not a JSON list")
    out = []
    for i, t in enumerate(raw):
        what = f"torrents/info[{i}]"
        out.append(
            TorrentBrief(
                hash=_get(t, "hash", str, what),
                name=_get(t, "name", str, what),
                state=_get(t, "state", str, what),
                tags=parse_tags(_get(t, "tags", str, what)),
            )
        )
    return tuple(out)


# What the watchdog keeps of sync/maindata.
_SERVER_FIELDS = {
    "connection_status": str,
    "dht_nodes": int,
    "dl_info_speed": int,
    "up_info_speed": int,
    "dl_info_data": int,
    "up_info_data": int,
}
_TORRENT_FIELDS = ("name", "state", "tags")


class MainData:
    """qBittorrent's ``sync/maindata``, kept up to date from its increments.

    The first answer (and any with ``full_update``) is complete; later ones,
    asked with the last ``rid``, carry only what changed. With 2,000 torrents
    a full torrents/info is about 3.6 MB of JSON per cycle; the increments are
    a few bytes per torrent that changed. Only the server fields above and
    name/state/tags are kept, each torrent as one TorrentBrief rebuilt only
    when one of those changed. An answer that does not fit is an error and
    the next one is asked from scratch (rid 0).
    """

    def __init__(self) -> None:
        self.rid = 0
        self.server: dict[str, object] = {}
        self.torrents: dict[str, TorrentBrief] = {}

    def apply(self, raw: object) -> None:
        try:
            self._apply(raw)
        except _Shape:
            self.__init__()
            raise

    def _apply(self, raw: object) -> None:
        what = "sync/maindata"
        rid = _get(raw, "rid", int, what)
        full = raw.get("full_update") is True  # type: ignore[union-attr]
        server = {} if full else dict(self.server)
        torrents = {} if full else dict(self.torrents)
        state = raw.get("server_state", {})  # type: ignore[union-attr]
        for key, typ in _SERVER_FIELDS.items():
            if isinstance(state, dict) and key in state:
                server[key] = _get(state, key, typ, f"{what} server_state")
        missing = [k for k in _SERVER_FIELDS if k not in server]
        if missing:
            raise _Shape(f"{what} server_state has no {', '.join(missing)}")
        changed = raw.get("torrents", {})  # type: ignore[union-attr]
        if not isinstance(changed, dict):
            raise _Shape(f"{what} torrents is not a JSON object")
        for h, fields in changed.items():
            where = f"{what} torrents[{h[:12]}]"
            if not isinstance(fields, dict):
                raise _Shape(f"{where} is not a JSON object")
            if not any(k in fields for k in _TORRENT_FIELDS):
                continue  # rates and times only: nothing we keep changed
            old = torrents.get(h)
            if old is None and not all(k in fields for k in _TORRENT_FIELDS):
                raise _Shape(f"{where} is new but lacks name, state or tags")
            torrents[h] = TorrentBrief(
                hash=h,
                name=_get(fields, "name", str, where) if "name" in fields else old.name,
                state=_get(fields, "state", str, where) if "state" in fields else old.state,
                tags=parse_tags(_get(fields, "tags", str, where)) if "tags" in fields else old.tags,
            )
        removed = raw.get("torrents_removed", [])  # type: ignore[union-attr]
        if not isinstance(removed, list):
            raise _Shape(f"{what} torrents_removed is not a JSON list")
        for h in removed:
            torrents.pop(h, None)
        self.rid, self.server, self.torrents = rid, server, torrents


BANNED = "this address is banned after too many failed logins"


def _is_ban(exc: BaseException) -> bool:
    text = getattr(getattr(exc, "response", None), "text", "") or ""
    return "banned" in text.lower()


def _strip_scope(addr: str) -> str:
    # qBittorrent lists IPv6 link-local addresses with a scope: "fe80::1%3".
    return addr.split("%", 1)[0]


def _describe_connection_error(exc: BaseException) -> str:
    text = f"{exc!r} {exc.__cause__!r} {exc.__context__!r}"
    for needle, words in (
        ("Timeout", "timed out"),
        ("timed out", "timed out"),
        ("Connection refused", "connection refused"),
        ("No route to host", "no route to host"),
        ("Network is unreachable", "network unreachable"),
        ("Name or service not known", "host name not resolvable"),
        ("RemoteDisconnected", "connection closed without an answer"),
        ("Connection reset", "connection reset"),
        ("SSLError", "TLS failure"),
    ):
        if needle in text:
            return words
    return "connection failed"


# The versions change only when qBittorrent is restarted or upgraded, which
# also ends our session; asked again at each login and at least this often.
VERSION_TTL = 300.0


class _Client(qbittorrentapi.Client):
    """qbittorrent-api's client with two per-request costs taken out.

    - The versions are kept (``VERSION_TTL``, and renewed at each login): the
      library asks ``app/webapiVersion`` before every versioned endpoint, and
      the watchdog shows both versions every cycle, which was three of the
      seven requests of a cycle.
    - ``trust_env = False`` on the requests session: requests otherwise scans
      the environment for proxy settings (and ~/.netrc for credentials) on
      every request, 0.5 ms of CPU each, to find what we turn off anyway
      (``proxies`` are None for every scheme).
    """

    _clock = staticmethod(time.monotonic)

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._versions: dict[str, tuple[float, str]] = {}
        super().__init__(*args, **kwargs)

    if hasattr(qbittorrentapi.Client, "_session"):

        @property
        def _session(self):  # type: ignore[override]
            session = super()._session
            session.trust_env = False
            return session

    def _kept(self, key: str, fetch: Callable[[], str]) -> str:
        got = self._versions.get(key)
        now = self._clock()
        if got is None or now - got[0] > VERSION_TTL:
            got = (now, fetch())
            self._versions[key] = got
        return got[1]

    def app_version(self, **kwargs: object) -> str:
        return self._kept("version", lambda: super(_Client, self).app_version(**kwargs))

    def app_web_api_version(self, **kwargs: object) -> str:
        return self._kept("api", lambda: super(_Client, self).app_web_api_version(**kwargs))

    def auth_log_in(self, *args: object, **kwargs: object) -> None:
        self._versions.clear()
        return super().auth_log_in(*args, **kwargs)


def _sort(exc: BaseException, during: str, where: str) -> SourceError:
    """A library exception as a SourceError whose text we wrote ourselves."""
    where = f"qBittorrent at {where}"
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, qe.LoginFailed):
        return SourceError(f"{where}: login refused (wrong username or password)", kind="login")
    if isinstance(exc, qe.HTTP403Error):
        return SourceError(f"{where}: {during} forbidden (403) after logging in", kind="login")
    if isinstance(exc, qe.HTTPError):
        status = getattr(exc, "http_status_code", None) or getattr(
            getattr(exc, "response", None), "status_code", "?"
        )
        return SourceError(f"{where}: {during} answered HTTP {status}", kind="bad_response")
    if isinstance(exc, qe.APIConnectionError):
        return SourceError(
            f"{where}: {during}: {_describe_connection_error(exc)}", kind="unreachable"
        )
    if isinstance(exc, qe.APIError):
        # Raised by qbittorrent-api when a body does not parse as expected.
        return SourceError(f"{where}: {during}: answer is not valid JSON", kind="bad_response")
    if isinstance(exc, _Shape):
        return SourceError(f"{where}: {during}: unexpected answer: {exc}", kind="bad_response")
    if isinstance(exc, requests.RequestException):
        return SourceError(
            f"{where}: {during}: {_describe_connection_error(exc)}", kind="unreachable"
        )
    if isinstance(exc, (ValueError, TypeError, KeyError, AttributeError)):
        return SourceError(
            f"{where}: {during}: unexpected answer ({type(exc).__name__})", kind="bad_response"
        )
    raise exc


def webui_probe(url: str, timeout: float) -> HttpResponse:
    """One unauthenticated GET of ``<url>/api/v2/app/version`` from where the watchdog runs.

    Needs no login, so it never counts towards a ban: qBittorrent answers
    403 "Forbidden" (or the version when the client is whitelisted).
    """
    base = url.rstrip("/")
    t0 = time.monotonic()
    where = safe_url(base)
    try:
        with (
            requests.Session() as session,
            session.get(
                base + "/api/v2/app/version",
                timeout=timeout,
                allow_redirects=False,
                stream=True,
                headers={"User-Agent": "qbt-vpn-watchdog"},
                proxies=NO_PROXIES,
            ) as r,
        ):
            body = r.raw.read(4096, decode_content=True) or b""
            headers = {k.lower(): v for k, v in r.headers.items()}
            return HttpResponse(r.status_code, headers, body, time.monotonic() - t0)
    except requests.RequestException as e:
        raise SourceError(
            f"WebUI at {where}: {_describe_connection_error(e)}", kind="unreachable"
        ) from None


class _WebSession:
    """The logged-in session: the login, its back-off gate, and every call sorted into
    SourceError (see the module doc: a login is never retried in a loop)."""

    def __init__(
        self,
        url: str,
        username: str,
        password_reader: Callable[[], str],
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self.where = safe_url(url)
        self.username = username
        self._password_reader = password_reader
        # One gate per WebUI and user in this process: a config reload (SIGHUP)
        # builds a new adapter, and must not earn a fresh login attempt.
        self.gate = login_gate(url, username, clock)
        self._logged_in = False
        self._session_fp = b""  # fingerprint of the password of the current session
        self.logins = 0  # login attempts sent (for tests and the curious)
        self.client = _Client(
            host=url,
            username=username,
            password="",
            # qbittorrent-api retries a failed request once: half the timeout
            # each, so a dead WebUI fails one call within ``timeout``. No
            # urllib3 retries on top, and no probing of https when the URL
            # says http (each probe would cost another timeout).
            # No proxy from the environment (http_proxy, ALL_PROXY...): the
            # login form carries the password, and the WebUI is local.
            REQUESTS_ARGS={"timeout": timeout / 2, "proxies": NO_PROXIES},
            HTTPADAPTER_ARGS={"max_retries": 0},
            FORCE_SCHEME_FROM_HOST=True,
            SIMPLE_RESPONSES=True,
            VERBOSE_RESPONSE_LOGGING=False,  # would log request details
        )

    def call(self, during: str, fn: Callable[[], object]) -> object:
        try:
            return fn()
        except qe.LoginFailed:
            # qbittorrent-api re-logged in by itself after a 403 (expired
            # session) with the password of our last login, and failed.
            self._login_failed(self._session_fp, "login refused (wrong username or password)")
            raise _sort(qe.LoginFailed(), during, self.where) from None
        except qe.HTTP403Error as e:
            # The automatic re-login was answered 403 (banned), or the call
            # still got 403 after it: either way a login went wrong.
            banned = _is_ban(e)
            reason = BANNED if banned else "forbidden (403) even after logging in again"
            self._login_failed(self._session_fp, reason, banned=banned)
            raise SourceError(
                f"qBittorrent at {self.where}: {during}: {reason}", kind="login"
            ) from None
        except Exception as e:  # noqa: BLE001 - sorted into SourceError or re-raised
            err = _sort(e, during, self.where)
            if err.kind == "login":
                self._logged_in = False
            raise err from None

    def _read_password(self) -> str:
        try:
            return self._password_reader()
        except Exception as e:  # noqa: BLE001 - ConfigError or OSError; names the path only
            msg = str(e).splitlines()[-1].strip() if str(e) else type(e).__name__
            raise SourceError(
                f"cannot read the qBittorrent password: {msg}", kind="login"
            ) from None

    def _login_failed(self, fingerprint: bytes, reason: str, banned: bool = False) -> None:
        self._logged_in = False
        self.gate.failed(fingerprint, reason, banned)
        log.warning(
            "qBittorrent at %s: %s; no new login for %.0f s unless the password file changes",
            self.where,
            reason,
            self.gate.backoff(),
        )

    def _ensure_login(self) -> None:
        if self._logged_in:
            return
        password = self._read_password()
        wait = self.gate.wait_left(password)
        if wait > 0:
            raise SourceError(
                f"qBittorrent at {self.where}: {self.gate.reason}; not trying again for "
                f"{wait:.0f} s (5 failed logins ban this address for an hour) "
                "unless the password file changes",
                kind="login",
            )
        self.logins += 1
        fp = self.gate.fingerprint(password)
        try:
            self.client.auth_log_in(username=self.username, password=password)
        except qe.LoginFailed:
            reason = "login refused (wrong username or password)"
            self._login_failed(fp, reason)
            raise SourceError(f"qBittorrent at {self.where}: {reason}", kind="login") from None
        except qe.HTTP403Error as e:
            banned = _is_ban(e)
            reason = BANNED if banned else "login forbidden (403)"
            self._login_failed(fp, reason, banned=banned)
            raise SourceError(f"qBittorrent at {self.where}: {reason}", kind="login") from None
        except Exception as e:  # noqa: BLE001
            raise _sort(e, "login", self.where) from None
        self.gate.succeeded()
        self._session_fp = fp
        self._logged_in = True

    def logged_in(self) -> qbittorrentapi.Client:
        """The client, logged in first when it is not (SourceError "login" otherwise)."""
        self._ensure_login()
        return self.client


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


class Qbittorrent:
    """qBittorrent Web API adapter; thread-safe (one request sequence at a time)."""

    def __init__(
        self,
        url: str,
        username: str,
        password_reader: Callable[[], str],
        timeout: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        verify_timeout: float = 5.0,
        verify_settle: float = 0.5,
        poll_interval: float = 0.2,
    ) -> None:
        self.url = url.rstrip("/")
        self.where = safe_url(self.url)
        self.timeout = timeout
        self.verify_timeout = verify_timeout
        self.verify_settle = verify_settle
        self.poll_interval = poll_interval
        self._lock = threading.RLock()
        self._main = MainData()
        self._web = _WebSession(self.url, username, password_reader, timeout, clock)
        self._call = self._web.call
        self._session = self._web.logged_in

    @property
    def gate(self) -> LoginGate:
        return self._web.gate

    @property
    def logins(self) -> int:
        """Login attempts sent (for tests and the curious)."""
        return self._web.logins

    @property
    def _client(self) -> qbittorrentapi.Client:
        return self._web.client

    def _sort(self, exc: BaseException, during: str) -> SourceError:
        return _sort(exc, during, self.where)

    # --- reading ---------------------------------------------------------------

    def state(self) -> QbtState:
        """Versions, binding, transfer info, the bound interface's addresses, torrents.

        Three requests a cycle (the versions are kept, see ``_Client``):
        preferences, the sync/maindata increment, the interface's addresses.
        """
        with self._lock:
            c = self._session()
            version = self._call("app/version", c.app_version)
            api_version = self._call("app/webapiVersion", c.app_web_api_version)
            prefs = self._call("app/preferences", c.app_preferences)
            main = self._call("sync/maindata", lambda: c.sync_maindata(rid=self._main.rid))
            try:
                self._main.apply(main)
                info = self._main.server
                p = "app/preferences"
                iface = _get(prefs, "current_network_interface", str, p)
                if not isinstance(version, str) or not version.strip():
                    raise _Shape("app/version is empty")
                state = dict(
                    version=version.strip(),
                    api_version=str(api_version).strip(),
                    interface_name=iface,
                    interface_address=_get(prefs, "current_interface_address", str, p),
                    listen_port=_get(prefs, "listen_port", int, p),
                    webui_address=_get(prefs, "web_ui_address", str, p),
                    webui_port=_get(prefs, "web_ui_port", int, p),
                    connection_status=info["connection_status"],
                    dht_nodes=info["dht_nodes"],
                    dl_speed=info["dl_info_speed"],
                    up_speed=info["up_info_speed"],
                    dl_total=info["dl_info_data"],
                    up_total=info["up_info_data"],
                )
            except _Shape as e:
                raise self._sort(e, "reading the state") from None
            addrs: tuple[str, ...] = ()
            if iface:
                raw = self._call(
                    "app/networkInterfaceAddressList",
                    lambda: c.app_network_interface_address_list(iface),
                )
                if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
                    raise self._sort(
                        _Shape("not a list of strings"), "app/networkInterfaceAddressList"
                    )
                addrs = tuple(_strip_scope(a) for a in raw)
            torrents = tuple(self._main.torrents.values())
            return QbtState(**state, interface_addresses=addrs, torrents=torrents)

    def _torrents(self, hashes: Iterable[str] | None = None) -> tuple[TorrentBrief, ...]:
        c = self._session()
        if hashes is None:
            raw = self._call("torrents/info", c.torrents_info)
        else:
            hs = list(hashes)
            raw = self._call("torrents/info", lambda: c.torrents_info(torrent_hashes=hs))
        try:
            return _torrents(raw)
        except _Shape as e:
            raise self._sort(e, "torrents/info") from None

    def webui_probe(self, url: str | None = None, timeout: float | None = None) -> HttpResponse:
        """``webui_probe`` at ``url`` (default: this adapter's), no login."""
        return webui_probe(url or self.url, timeout or self.timeout)

    # --- remediation -------------------------------------------------------------

    def held(self, tag: str = DEFAULT_TAG) -> list[str]:
        """Hashes of the torrents carrying our tag (the ones we stopped and hold)."""
        with self._lock:
            return [t.hash for t in self._torrents() if tag in t.tags]

    def stop_active(self, tag: str = DEFAULT_TAG) -> list[str]:
        """Stop every active torrent and tag exactly those; return their hashes.

        Torrents already stopped (by the user, or earlier by us) are not
        touched. The tag goes on first, so that a crash between the two calls
        leaves a tagged running torrent (stopped by the next call) rather than
        an untagged stopped one (never resumed). The state is then verified and
        the stop re-sent once (a pause sent about 1 s after a resume was seen
        lost); ``SourceError(kind="not_stopped")`` if some still run.
        """
        with self._lock:
            c = self._session()
            targets = [t.hash for t in self._torrents() if is_active(t)]
            if not targets:
                return []
            self._call(
                "torrents/addTags", lambda: c.torrents_add_tags(tags=tag, torrent_hashes=targets)
            )

            def stopped(t: TorrentBrief) -> bool:
                return t.state in STOPPED_STATES or t.state in UNCONFIRMABLE_STATES

            # torrents_stop sends torrents/pause before Web API 2.11.0 (qBittorrent 4.x),
            # torrents/stop from 2.11.0 (5.x).
            left = send_until_shown(
                "stop",
                targets,
                lambda h: self._call("torrents/stop", lambda: c.torrents_stop(torrent_hashes=h)),
                lambda h: self._wait(h, stopped),
            )
            if left:
                raise SourceError(
                    f"qBittorrent: {len(left)} torrent(s) still running after stop was sent twice: "
                    + ", ".join(h[:12] for h in left),
                    kind="not_stopped",
                )
            return targets

    def start_tagged(self, tag: str = DEFAULT_TAG) -> list[str]:
        """Start the torrents carrying ``tag``, then remove the tag; return their hashes.

        Only tagged torrents are started: a torrent the user stopped never got
        the tag. One the user stopped while we held it still carries the tag
        and is started (we cannot tell the two stops apart; a user who wants it
        to stay stopped removes the tag). The tag is removed only after the
        start is verified (re-sent once), so a failure leaves it for the next
        call: ``SourceError(kind="not_started")``.
        """
        with self._lock:
            c = self._session()
            targets = [t.hash for t in self._torrents() if tag in t.tags]
            if not targets:
                return []

            def started(t: TorrentBrief) -> bool:
                return t.state not in STOPPED_STATES

            left = send_until_shown(
                "start",
                targets,
                lambda h: self._call("torrents/start", lambda: c.torrents_start(torrent_hashes=h)),
                lambda h: self._wait(h, started),
            )
            if left:
                raise SourceError(
                    f"qBittorrent: {len(left)} torrent(s) still stopped after start was sent "
                    "twice: " + ", ".join(h[:12] for h in left),
                    kind="not_started",
                )
            self._call(
                "torrents/removeTags",
                lambda: c.torrents_remove_tags(tags=tag, torrent_hashes=targets),
            )
            return targets

    def _wait(self, hashes: list[str], good: Callable[[TorrentBrief], bool]) -> list[str]:
        """Poll until every torrent is ``good`` and still is ``verify_settle`` s later;
        the ones that are not by ``verify_timeout``."""

        def not_yet() -> list[str]:
            now = {t.hash: t for t in self._torrents(hashes)}
            # A torrent that vanished (deleted meanwhile) needs nothing more.
            left = [h for h in hashes if h in now and not good(now[h])]
            if not left and self.verify_settle > 0:
                time.sleep(self.verify_settle)  # still so a moment later?
                now = {t.hash: t for t in self._torrents(hashes)}
                left = [h for h in hashes if h in now and not good(now[h])]
            return left

        return poll_until_empty(not_yet, self.verify_timeout, self.poll_interval)

    def set_binding(self, interface: str, listen_port: int | None = None) -> None:
        """Bind qBittorrent to ``interface`` (and ``listen_port`` when given); verified."""
        prefs: dict[str, object] = {"current_network_interface": interface}
        if listen_port:
            prefs["listen_port"] = int(listen_port)
        with self._lock:
            c = self._session()
            self._call("app/setPreferences", lambda: c.app_set_preferences(prefs=prefs))
            now = self._call("app/preferences", c.app_preferences)
            try:
                got = {k: _get(now, k, type(v), "app/preferences") for k, v in prefs.items()}
            except _Shape as e:
                raise self._sort(e, "app/preferences") from None
            if got != prefs:
                raise SourceError(
                    f"qBittorrent did not apply the binding: asked {prefs}, has {got}",
                    kind="not_applied",
                )

    def reannounce(self) -> None:
        """Ask every torrent's trackers for peers now.

        After a stall (sockets on a vanished interface) libtorrent has given up
        on the peers it failed to reach and waits for the next announce, which
        the lab's tracker, like many, schedules 30 minutes out; the stall would
        outlive its cause by that long.
        """
        with self._lock:
            c = self._session()
            self._call("torrents/reannounce", lambda: c.torrents_reannounce(torrent_hashes="all"))
