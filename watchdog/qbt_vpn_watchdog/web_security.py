"""Who may read /metrics and /healthz: HTTPS and HTTP basic auth, from the [web] config.

What Prometheus's exporter-toolkit web config gives Go exporters, in the form
this config has: a certificate and key for TLS, one user whose password is
read from a file. Secrets are read when the config is loaded (start and
SIGHUP reload), so a missing or wrong file is a config error then, not a
failed scrape later; the password is kept only as its SHA-256 digest and
never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# The error type only, never the loader: config.loading calls load_web_security,
# so importing the config package from here would close an import circle.
from qbt_vpn_watchdog.config.errors import ConfigError

if TYPE_CHECKING:
    from qbt_vpn_watchdog.config.schema import WebSection

TLS_VERSIONS = {"TLS1.2": ssl.TLSVersion.TLSv1_2, "TLS1.3": ssl.TLSVersion.TLSv1_3}
REALM = "qbt-vpn-watchdog"


@dataclass(frozen=True)
class WebSecurity:
    ssl_context: ssl.SSLContext | None = None
    username: str = ""
    password_sha256: bytes = b""

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def challenge(self) -> str:
        """The WWW-Authenticate header of a 401."""
        return f'Basic realm="{REALM}", charset="UTF-8"'

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header lets the request through (always, without auth)."""
        if not self.username:
            return True
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = (
                base64.b64decode(token.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both compared in constant time, and both always compared.
        user_ok = hmac.compare_digest(user.encode(), self.username.encode())
        digest = hashlib.sha256(password.encode()).digest()
        password_ok = hmac.compare_digest(digest, self.password_sha256)
        return bool(sep) and user_ok and password_ok


def load_web_security(web: WebSection) -> WebSecurity:
    """The TLS context and the credentials the [web] section names.

    ``ConfigError`` naming each file that cannot be used (never its content).
    """
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
    digest = b""
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
            digest = hashlib.sha256(password.encode()).digest()
    if errors:
        raise ConfigError("web", errors)
    return WebSecurity(ctx, web.basic_auth_username, digest)
