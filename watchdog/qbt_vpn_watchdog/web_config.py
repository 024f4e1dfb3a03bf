"""exporter-toolkit's web-config.yml -> ``WebSecurity``: the file node_exporter takes.

What is read (exporter-toolkit docs/web-configuration.md), and what is not:

* ``tls_server_config``: ``cert_file``, ``key_file``, ``client_ca_file``,
  ``client_auth_type`` (``NoClientCert``, ``RequestClientCert``,
  ``RequireAnyClientCert``, ``VerifyClientCertIfGiven``,
  ``RequireAndVerifyClientCert``; Python's ssl cannot take a certificate
  without verifying it, so the first two verify too: every type but
  NoClientCert needs client_ca_file, and is never looser than Go's),
  ``min_version``/``max_version`` (``TLS12``,
  ``TLS13``; Python's ssl refuses older ones anyway),
  ``prefer_server_cipher_suites`` (accepted; OpenSSL's choice stands).
  ``cipher_suites``, ``curve_preferences``, ``client_allowed_sans`` and the
  inline ``cert``/``key``/``client_ca`` are refused with a message: a setting
  that narrows who may connect is never silently dropped.
* ``basic_auth_users``: user -> bcrypt hash (``htpasswd -nBC 10 "" | tr -d ':\\n'``).
* ``http_server_config``: ``http2`` accepted and ignored (HTTP/1.1 only);
  ``headers`` refused.
* ``rate_limit``: refused (this server bounds connections and throttles failed
  logins itself: http_server.py, web_security.py).

Unlike exporter-toolkit, the file is read at start and on SIGHUP, not on every
request: an error is a config error then (exit 2, or the reload rejected).

Needs PyYAML and bcrypt, the optional ``[web]`` extra; without them the
config error says so.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from qbt_vpn_watchdog.config.errors import ConfigError
from qbt_vpn_watchdog.web_security import BcryptHash, Verifier, WebSecurity

VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
OLD_VERSIONS = ("TLS10", "TLS11")
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,  # Python cannot ask without verifying
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TOP = {"tls_server_config", "basic_auth_users", "http_server_config", "rate_limit"}
TLS_KEYS = {
    "cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version",
    "max_version", "prefer_server_cipher_suites",
}  # fmt: skip
TLS_REFUSED = {
    "cipher_suites": "cipher_suites is not supported (OpenSSL's defaults apply); remove it",
    "curve_preferences": "curve_preferences is not supported; remove it",
    "client_allowed_sans": "client_allowed_sans is not supported; use a client CA that signs"
    " only the allowed clients",
    "cert": "inline certificates are not supported: use cert_file",
    "key": "inline keys are not supported: use key_file",
    "client_ca": "an inline client CA is not supported: use client_ca_file",
}
# bcrypt of "decoy" at cost 10: checked for an unknown user, so a wrong user name costs
# the same time as a wrong password (exporter-toolkit does the same).
DECOY = b"$2b$10$JyuQKUHEWt06Mf7s9x9FT.dt.gwyX3vIavuoG1A/OSg/aQuukfR/2"


def load_web_config(path: str) -> WebSecurity:
    """``ConfigError`` ("web.config_file: ...") naming everything wrong in the file at once."""
    where = f"web.config_file {path}"
    try:
        import bcrypt  # noqa: F401 - only to fail here, clearly, and not at the first scrape
        import yaml
    except ImportError as e:
        raise ConfigError(
            "web",
            [
                f"web.config_file: reading {path} needs the optional packages PyYAML and bcrypt"
                f" ({e.name} is missing): pip install 'qbt-vpn-watchdog[web]', or Debian's"
                " python3-yaml and python3-bcrypt"
            ],
        ) from None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("web", [f"web.config_file: no such file: {path}"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("web", [f"web.config_file: cannot read {path}: {type(e).__name__}"]) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("web", [f"{where}: not valid YAML{at}"]) from None
    doc = {} if doc is None else doc
    if not isinstance(doc, dict):
        raise ConfigError("web", [f"{where}: expected a mapping at the top"])
    errors = [f"{where}: {k}: unknown key (known: {', '.join(sorted(TOP))})" for k in doc if k not in TOP]
    if doc.get("rate_limit") is not None:
        errors.append(
            f"{where}: rate_limit: not supported (connections are capped by web.max_connections"
            " and failed logins throttled per client); remove it"
        )
    http = doc.get("http_server_config") or {}
    if not isinstance(http, dict):
        errors.append(f"{where}: http_server_config: expected a mapping")
        http = {}
    for k in http:
        if k == "headers":
            errors.append(f"{where}: http_server_config.headers: not supported; remove it")
        elif k != "http2":
            errors.append(f"{where}: http_server_config.{k}: unknown key")
    ctx = _tls(doc.get("tls_server_config"), where, errors)
    users = _users(doc.get("basic_auth_users"), where, errors)
    if errors:
        raise ConfigError("web", errors)
    return WebSecurity(ctx, users, BcryptHash(DECOY) if users else None, path)


def _tls(tls, where: str, errors: list[str]) -> ssl.SSLContext | None:
    if tls is None:
        return None
    if not isinstance(tls, dict):
        errors.append(f"{where}: tls_server_config: expected a mapping")
        return None
    before = len(errors)
    for k in tls:
        if k in TLS_REFUSED:
            errors.append(f"{where}: tls_server_config.{k}: {TLS_REFUSED[k]}")
        elif k not in TLS_KEYS:
            errors.append(f"{where}: tls_server_config.{k}: unknown key")
    cert, key = tls.get("cert_file"), tls.get("key_file")
    if not cert or not key:
        errors.append(f"{where}: tls_server_config: cert_file and key_file are both needed")
    for k in ("cert_file", "key_file", "client_ca_file"):
        v = tls.get(k)
        if v and not Path(str(v)).is_file():
            errors.append(f"{where}: tls_server_config.{k}: no such file: {v}")
    auth = tls.get("client_auth_type") or "NoClientCert"
    if auth not in CLIENT_AUTH:
        errors.append(
            f"{where}: tls_server_config.client_auth_type: {auth!r} is not one of"
            f" {', '.join(CLIENT_AUTH)}"
        )
    elif CLIENT_AUTH[auth] != ssl.CERT_NONE and not tls.get("client_ca_file"):
        errors.append(f"{where}: tls_server_config.client_ca_file: needed for {auth}")
    versions = {}
    for k, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        v = tls.get(k) or default
        if v in OLD_VERSIONS and k == "min_version":
            v = "TLS12"  # Python's ssl and OpenSSL 3 refuse TLS 1.0/1.1: 1.2 is the floor
        if v not in VERSIONS:
            errors.append(f"{where}: tls_server_config.{k}: {v!r} is not one of TLS12, TLS13")
            continue
        versions[k] = VERSIONS[v]
    if len(errors) > before:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = versions["min_version"]
    ctx.maximum_version = versions["max_version"]
    try:
        ctx.load_cert_chain(str(cert), str(key))
        if tls.get("client_ca_file"):
            ctx.load_verify_locations(cafile=str(tls["client_ca_file"]))
        ctx.verify_mode = CLIENT_AUTH[auth]
    except (ssl.SSLError, OSError) as e:
        errors.append(
            f"{where}: tls_server_config: cannot use cert_file {cert} with key_file {key}"
            f"{' and client_ca_file ' + str(tls['client_ca_file']) if tls.get('client_ca_file') else ''}:"
            f" {getattr(e, 'reason', None) or type(e).__name__}"
        )
        return None
    return ctx


def _users(users, where: str, errors: list[str]) -> dict[str, Verifier]:
    if users is None:
        return {}
    if not isinstance(users, dict):
        errors.append(f"{where}: basic_auth_users: expected a mapping of user: bcrypt hash")
        return {}
    out: dict[str, Verifier] = {}
    for name, hashed in users.items():
        if not isinstance(hashed, str) or not _is_bcrypt(hashed):
            # Never the value itself: it may be a password put there by mistake.
            errors.append(
                f"{where}: basic_auth_users.{name}: not a bcrypt hash ($2y$..., as"
                " `htpasswd -nBC 10 \"\" | tr -d ':\\n'` prints)"
            )
            continue
        out[str(name)] = BcryptHash(hashed.encode())
    return out


def _is_bcrypt(h: str) -> bool:
    return (
        len(h) == 60
        and h[:4] in ("$2a$", "$2b$", "$2y$")
        and h[4:6].isdigit()
        and 4 <= int(h[4:6]) <= 31
        and h[6] == "$"
    )
