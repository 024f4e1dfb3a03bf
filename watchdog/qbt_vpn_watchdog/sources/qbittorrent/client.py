"""The qbittorrent-api client, the logged-in session, and library errors sorted into SourceError.

Messages are composed from our own words, never from the library's exception
text (whose request object holds the login form).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import qbittorrentapi
import requests
from qbittorrentapi import exceptions as qe

from qbt_vpn_watchdog.sources import (
    HttpResponse,
    LocalResourceError,
    SourceError,
    local_resource,
)
from qbt_vpn_watchdog.sources.bounded_requests import AnswerTooLarge, BoundedAdapter
from qbt_vpn_watchdog.sources.qbittorrent.login import BANNED, _is_ban, login_gate
from qbt_vpn_watchdog.sources.qbittorrent.maindata import _Shape

# One logger for the whole adapter, as before it was a package.
log = logging.getLogger("qbt_vpn_watchdog.sources.qbittorrent")


# requests takes proxies from the environment unless told None per scheme.
NO_PROXIES = {"http": None, "https": None, "all": None}
# The largest Web API answer read (bounded_requests.BoundedAdapter): a full
# sync/maindata is about 2 KB per torrent, so 32 MiB holds some 15,000
# torrents, while a broken or hostile WebUI sending 200 MiB is cut off here
# instead of taking the daemon past a GiB.
MAX_ANSWER_BYTES = 32 * 1024 * 1024
# webui_probe reads this much of the answer at most (the version, or "Forbidden").
PROBE_BYTES = 4096


def safe_url(url: str) -> str:
    """The URL without user:password@, for messages."""
    u = urlsplit(url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, netloc, u.path, "", ""))


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

    And one bound added: every request goes through ``BoundedAdapter``, so it
    ends by its timeout however slowly qBittorrent answers (a hung or dripping
    WebUI), and reads at most ``MAX_ANSWER_BYTES``.
    """

    _clock = staticmethod(time.monotonic)

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._versions: dict[str, tuple[float, str]] = {}
        super().__init__(*args, **kwargs)

    if hasattr(qbittorrentapi.Client, "_session"):

        @property
        def _session(self):  # type: ignore[override]
            session = super()._session
            if not getattr(session, "_qvw_bounded", False):
                session.trust_env = False
                # No urllib3 retries: qbittorrent-api retries once by itself.
                adapter = BoundedAdapter(MAX_ANSWER_BYTES, max_retries=0)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                session._qvw_bounded = True
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
    ran_out = local_resource(exc)
    if ran_out is not None:
        return LocalResourceError(f"{where}: {during}", ran_out)
    too_large = _found(exc, AnswerTooLarge)
    if too_large is not None:
        return SourceError(f"{where}: {during}: {too_large}", kind="bad_response")
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


def _found(exc: BaseException | None, cls: type[BaseException]) -> BaseException | None:
    """``exc`` or the error it was raised from (qbittorrent-api wraps requests') of ``cls``."""
    for _ in range(8):
        if exc is None or isinstance(exc, cls):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def webui_probe(url: str, timeout: float) -> HttpResponse:
    """One unauthenticated GET of ``<url>/api/v2/app/version`` from where the watchdog runs.

    Needs no login, so it never counts towards a ban: qBittorrent answers
    403 "Forbidden" (or the version when the client is whitelisted).
    """
    base = url.rstrip("/")
    t0 = time.monotonic()
    where = safe_url(base)
    try:
        with requests.Session() as session:
            # The whole GET within ``timeout`` (a WebUI dripping its answer
            # cannot hold the check), and only the first PROBE_BYTES kept.
            adapter = BoundedAdapter(PROBE_BYTES, truncate=True, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            with session.get(
                base + "/api/v2/app/version",
                timeout=timeout,
                allow_redirects=False,
                headers={"User-Agent": "qbt-vpn-watchdog"},
                proxies=NO_PROXIES,
            ) as r:
                headers = {k.lower(): v for k, v in r.headers.items()}
                return HttpResponse(r.status_code, headers, r.content, time.monotonic() - t0)
    except requests.RequestException as e:
        ran_out = local_resource(e)
        if ran_out is not None:
            raise LocalResourceError(f"WebUI at {where}", ran_out) from None
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
        # Held across a login only (itself bounded by the timeout): two readers
        # needing a session at once must not both send one.
        self._login_lock = threading.Lock()
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
        """The password file's content; its errors are ``password_file``, never ``login``:
        nothing was sent, so there is no failed login to wait out (no back-off)."""
        try:
            return self._password_reader()
        except Exception as e:  # noqa: BLE001 - ConfigError or OSError; names the path only
            msg = str(e).splitlines()[-1].strip() if str(e) else type(e).__name__
            what = "cannot read the qBittorrent password file"
            ran_out = local_resource(e)
            if ran_out is not None:
                raise LocalResourceError(what, ran_out) from None
            raise SourceError(f"{what}: {msg}", kind="password_file") from None

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
        with self._login_lock:
            if not self._logged_in:
                self._log_in()

    def _log_in(self) -> None:
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
