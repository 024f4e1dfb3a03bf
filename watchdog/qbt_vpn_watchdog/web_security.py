"""Who may read /metrics, /healthz and /readyz: HTTPS and HTTP basic auth.

One model, two ways in (``load_web_security``):

* ``web.config_file`` (or ``run --web.config.file``): exporter-toolkit's
  ``web-config.yml``, the file node_exporter and every Go exporter take
  (``web_config.py`` reads it): several users with bcrypt hashes, optional
  client certificates. Preferred: the same file works for every exporter on
  the host, and no password is stored in a form that gives it away.
* the ``[web]`` section's own keys: one user whose password is read from a
  file (kept only as its SHA-256 digest).

Secrets are read when the config is loaded (start and SIGHUP reload), so a
missing or wrong file is a config error then, not a failed scrape later; no
password or hash is ever logged.

``Gate`` decides each request without ever blocking the server's loop: known
good credentials (cached by a digest of what was presented) pass at once; a
credential not seen before needs one password check (bcrypt: about 60 ms at
cost 10), run by the server in one thread of its own, one check at a time;
from the third wrong one in a row the client's address gets no further check
for 1 s, doubling to 60 s, and is answered 429 at once meanwhile (the same
wrong password again is answered from a cache and does not count). A guessing client
therefore costs a request parse per guess and one bcrypt check per back-off
period, and never delays a scrape whose credentials are cached. Failures are
counted (``qbtvpn_http_auth_failures_total{reason}``) and logged at most once
per client a minute.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import logging
import math
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

# The error type only, never the loader: config.loading calls load_web_security,
# so importing the config package from here would close an import circle.
from qbt_vpn_watchdog.config.errors import ConfigError

if TYPE_CHECKING:
    from qbt_vpn_watchdog.config.schema import Config, WebSection

log = logging.getLogger(__name__)

TLS_VERSIONS = {"TLS1.2": ssl.TLSVersion.TLSv1_2, "TLS1.3": ssl.TLSVersion.TLSv1_3}
REALM = "qbt-vpn-watchdog"

# Why a request was refused (the label of qbtvpn_http_auth_failures_total).
AUTH_FAILURE_REASONS = ("missing", "wrong", "throttled")


class Verifier(Protocol):
    def matches(self, password: bytes) -> bool: ...


@dataclass(frozen=True, repr=False)
class Sha256Password:
    """A password from the [web] section, kept as its SHA-256 digest."""

    digest: bytes

    def matches(self, password: bytes) -> bool:
        return hmac.compare_digest(hashlib.sha256(password).digest(), self.digest)

    def __repr__(self) -> str:
        return "Sha256Password(<hidden>)"


@dataclass(frozen=True, repr=False)
class BcryptHash:
    """A web-config.yml password: a bcrypt hash ($2a$, $2b$, $2y$), as htpasswd -B writes."""

    hashed: bytes

    def matches(self, password: bytes) -> bool:
        import bcrypt  # optional: checked when web-config.yml is loaded

        try:
            return bcrypt.checkpw(password, self.hashed)
        except ValueError:  # longer than bcrypt's 72 bytes, or a hash it cannot read
            return False

    def __repr__(self) -> str:
        return "BcryptHash(<hidden>)"


@dataclass(frozen=True)
class WebSecurity:
    ssl_context: ssl.SSLContext | None = None
    users: Mapping[str, Verifier] = field(default_factory=dict)
    # Stands in for an unknown user, so the answer takes as long as for a known one.
    decoy: Verifier | None = None
    source: str = ""  # where it came from, for the log: "[web]" or the web config's path

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def challenge(self) -> str:
        """The WWW-Authenticate header of a 401."""
        return f'Basic realm="{REALM}", charset="UTF-8"'

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header lets a request through, checked here and now
        (the server goes through ``Gate`` instead, which caches and throttles)."""
        if not self.users:
            return True
        creds = parse_basic(header)
        return creds is not None and self.verify(*creds)

    def verify(self, user: str, password: bytes) -> bool:
        """The slow part (bcrypt); the same work for an unknown user."""
        verifier = self.users.get(user)
        if verifier is None:
            if self.decoy is not None:
                self.decoy.matches(password)
            return False
        return verifier.matches(password)


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from a Basic Authorization header, None when there is none."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
        user, sep, password = raw.partition(b":")
        if not sep:
            return None
        return user.decode(), password
    except (binascii.Error, UnicodeDecodeError):
        return None


# --- deciding requests without blocking the server -----------------------------------

# A client's first wrong passwords are checked at once (a Prometheus job with a stale
# password must not delay another job's first login from the same host); from the
# FREE_GUESSES-th wrong one in a row it gets no check for 1 s, doubling to 60 s.
FREE_GUESSES = 3
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
FORGET_AFTER = 600.0  # s of quiet after which a client's failures are forgotten
MAX_WAITING = 8  # password checks queued or running at once, all clients together
MAX_WAITING_PER_CLIENT = 2
LOG_EVERY = 60.0  # s: at most one log line per client
_CACHE_OK = 64
_CACHE_WRONG = 256
_CLIENTS = 1024


@dataclass
class AuthCounters:
    """Kept by the server across reloads; read by the metrics."""

    failures: Counter = field(default_factory=Counter)  # reason -> n


@dataclass
class _Client:
    failures: int = 0  # wrong passwords in a row
    blocked_until: float = 0.0
    last_failure: float = -math.inf
    waiting: int = 0  # checks queued or running for it
    logged_at: float = -math.inf
    unlogged: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class Pending:
    """A password check the server runs in its checker thread."""

    key: bytes
    user: str
    password: bytes = field(repr=False)
    client: str


class Gate:
    """Decides each request at once: ``("ok"|"refused", None)``, ``("throttled", seconds)``,
    or ``("check", Pending)``: run ``security.verify`` in another thread, then ``settle``.

    Only the server's loop thread calls ``decide`` and ``settle``.
    """

    def __init__(
        self,
        security: WebSecurity,
        counters: AuthCounters | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.security = security
        self.counters = counters if counters is not None else AuthCounters()
        self.clock = clock
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._wrong: OrderedDict[bytes, None] = OrderedDict()
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._waiting = 0

    def decide(self, header: str | None, client: str) -> tuple[str, object]:
        if not self.security.users:
            return "ok", None
        creds = parse_basic(header)
        if creds is None:
            self._failed(client, "missing")
            return "refused", None
        user, password = creds
        # What was presented, digested (never kept in clear): the cache's key.
        key = hashlib.sha256(user.encode() + b"\0" + password).digest()
        if key in self._ok:
            self._ok.move_to_end(key)
            return "ok", None
        if key in self._wrong:  # the same wrong password again: no new check
            self._failed(client, "wrong")
            return "refused", None
        now = self.clock()
        st = self._client(client, now)
        if (
            st.blocked_until > now
            or st.waiting >= MAX_WAITING_PER_CLIENT
            or self._waiting >= MAX_WAITING
        ):
            self._failed(client, "throttled")
            return "throttled", max(1, math.ceil(st.blocked_until - now))
        st.waiting += 1
        self._waiting += 1
        return "check", Pending(key, user, password, client)

    def settle(self, p: Pending, ok: bool) -> bool:
        """Record a finished check; True when the request may pass."""
        self._waiting -= 1
        now = self.clock()
        st = self._client(p.client, now)
        st.waiting -= 1
        if ok:
            _remember(self._ok, p.key, _CACHE_OK)
            st.failures = 0
            st.blocked_until = 0.0
            return True
        _remember(self._wrong, p.key, _CACHE_WRONG)
        st.failures += 1
        st.last_failure = now
        if st.failures >= FREE_GUESSES:
            delay = BACKOFF_FIRST * 2 ** (st.failures - FREE_GUESSES)
            st.blocked_until = now + min(BACKOFF_MAX, delay)
        self._failed(p.client, "wrong")
        return False

    def _client(self, client: str, now: float) -> _Client:
        st = self._clients.get(client)
        if st is None:
            st = self._clients[client] = _Client()
            while len(self._clients) > _CLIENTS:
                old = next(iter(self._clients))
                if self._clients[old].waiting:
                    self._clients.move_to_end(old)
                    break
                del self._clients[old]
        elif now - st.last_failure > FORGET_AFTER and not st.waiting:
            st.failures = 0
        self._clients.move_to_end(client)
        return st

    def _failed(self, client: str, reason: str) -> None:
        self.counters.failures[reason] += 1
        now = self.clock()
        st = self._client(client, now)
        st.unlogged[reason] += 1
        if now - st.logged_at >= LOG_EVERY:
            what = ", ".join(f"{n} {r}" for r, n in sorted(st.unlogged.items()))
            log.warning(
                "http: refused %s from %s (%s); at most one such line per client a minute,"
                " every refusal counts in qbtvpn_http_auth_failures_total",
                "a request" if st.unlogged.total() == 1 else "requests", client, what,
            )  # fmt: skip
            st.logged_at = now
            st.unlogged.clear()


def _remember(cache: OrderedDict[bytes, None], key: bytes, size: int) -> None:
    cache[key] = None
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)


# --- loading -------------------------------------------------------------------------


def load_web_security(web: WebSection) -> WebSecurity:
    """The TLS context and the users the config names (web.config_file, or the [web] keys).

    ``ConfigError`` naming each file that cannot be used (never its content).
    """
    if web.config_file:
        from qbt_vpn_watchdog.web_config import load_web_config

        return load_web_config(web.config_file)
    errors: list[str] = []
    ctx = None
    tls_files = {"tls_cert_file": web.tls_cert_file, "tls_key_file": web.tls_key_file}
    missing = [
        f"web.{k}: no such file: {v}" for k, v in tls_files.items() if v and not Path(v).exists()
    ]
    errors += missing
    if web.tls_cert_file and web.tls_key_file and not missing:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = TLS_VERSIONS[web.tls_min_version]
        try:
            ctx.load_cert_chain(web.tls_cert_file, web.tls_key_file)
        except (ssl.SSLError, OSError) as e:
            # e.g. the key does not match the certificate, or a file is not PEM.
            errors.append(
                f"web.tls_cert_file/tls_key_file: cannot use {web.tls_cert_file} with"
                f" {web.tls_key_file}: {getattr(e, 'reason', None) or type(e).__name__}"
            )
    users: dict[str, Verifier] = {}
    if web.basic_auth_username and web.basic_auth_password_file:
        path = web.basic_auth_password_file
        try:
            with open(path, encoding="utf-8") as f:
                password = f.read().rstrip("\r\n")
        except FileNotFoundError:
            errors.append(f"web.basic_auth_password_file: no such file: {path}")
        except (OSError, UnicodeDecodeError) as e:
            errors.append(f"web.basic_auth_password_file: cannot read {path}: {type(e).__name__}")
        else:
            if not password:
                errors.append(f"web.basic_auth_password_file: {path} is empty")
            users[web.basic_auth_username] = Sha256Password(
                hashlib.sha256(password.encode()).digest()
            )
    if errors:
        raise ConfigError("web", errors)
    decoy = Sha256Password(hashlib.sha256(b"decoy").digest()) if users else None
    return WebSecurity(ctx, users, decoy, "[web]")


def with_config_file(cfg: Config, path: str) -> Config:
    """The config with ``run --web.config.file`` in place of web.config_file (the flag wins).

    ``ConfigError`` when the file's [web] section also sets TLS or a user: two sources of
    who may connect would leave the reader guessing which applies.
    """
    if not path:
        return cfg
    clash = [k for k in _OWN_KEYS if getattr(cfg.web, k)]
    if clash:
        raise ConfigError(
            "--web.config.file",
            [f"web.{k}: set in {cfg.source or 'the config'} too; with --web.config.file, put"
             " TLS and users in that file only" for k in clash],
        )  # fmt: skip
    return dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, config_file=path))


_OWN_KEYS = ("tls_cert_file", "tls_key_file", "basic_auth_username", "basic_auth_password_file")
