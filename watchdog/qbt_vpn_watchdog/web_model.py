"""Who may connect, as the server sees it: the model both ways in build.

``WebSecurity`` holds the TLS context and the users, each user's password kept
as a ``Verifier``: ``Sha256Password`` for the ``[web]`` section's one user,
``BcryptHash`` for web-config.yml's. ``web_security.load_web_security`` builds
it from the config (through ``web_config.load_web_config`` for
``web.config_file``); the server reads it. Here, in a module of its own, so
that the two loaders share it without importing each other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

REALM = "qbt-vpn-watchdog"


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
    except ValueError:  # binascii.Error, UnicodeDecodeError, a non-ASCII token: no credentials
        return None
