"""Loading: TOML text -> ``Config``, every problem collected, then one ``ConfigError``.

Unknown keys are errors (a typo must never silently disable a check), with a
"did you mean" or the table the key belongs in. Secrets are read only to
prove they can be (``load(..., secrets=True)``) and never kept or shown.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from pathlib import Path

from qbt_vpn_watchdog.config.errors import ConfigError
from qbt_vpn_watchdog.config.fields import _listen_address
from qbt_vpn_watchdog.config.schema import DEFAULT_PASSWORD_FILE, Config, QbittorrentSection
from qbt_vpn_watchdog.secret_file import SecretFileError, read_secret_file


def _pairs(cfg: Config) -> list[str]:
    """Keys that only make sense together."""
    errors = []
    w = cfg.web
    if w.config_file:
        for k in ("tls_cert_file", "tls_key_file", "basic_auth_username", "basic_auth_password_file"):
            if getattr(w, k):
                errors.append(
                    f"web.{k}: not used when web.config_file is set (put TLS and users in that file)"
                )
    for a, b in (
        ("tls_cert_file", "tls_key_file"),
        ("basic_auth_username", "basic_auth_password_file"),
    ):
        if bool(getattr(w, a)) != bool(getattr(w, b)):
            given, missing = (a, b) if getattr(w, a) else (b, a)
            errors.append(f"web.{missing}: needed because web.{given} is set (set both or neither)")
    return errors


_TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _describe(v: object) -> str:
    if isinstance(v, str):
        return f'"{v}"' if len(v) < 60 else f'"{v[:57]}..."'
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v)


def _build(cls: type, data: dict, path: str, errors: list[str]):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    known = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in known:
            where = f"{path}.{key}" if path else key
            errors.append(
                f"{where}: unknown key{_hint(key, known)} (known: {', '.join(sorted(known))})"
            )
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal") or f.name not in data:
            continue
        where = f"{path}.{f.name}" if path else f.name
        value = data[f.name]
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, dict):
                errors.append(f"{where}: expected a table [{where}], got {_describe(value)}")
                continue
            kwargs[f.name] = _build(typ, value, where, errors)
            continue
        ok, value = _coerce(typ, value)
        if not ok:
            errors.append(f"{where}: expected {_word(typ)}, got {_describe(data[f.name])}")
            continue
        check = f.metadata.get("check")
        if check is not None:
            problem = check(value)
            if problem:
                errors.append(f"{where}: expected {problem}, got {_describe(data[f.name])}")
                continue
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except TypeError:  # only reachable when errors were already recorded
        return cls()


def _key_paths(cls: type = None, path: str = "") -> list[str]:
    """Every key of the schema as a dotted path, e.g. "checks.dns.recover_after"."""
    cls = Config if cls is None else cls
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        where = f"{path}.{f.name}" if path else f.name
        out += (
            _key_paths(hints[f.name], where) if dataclasses.is_dataclass(hints[f.name]) else [where]
        )
    return out


def _hint(key: str, known: set[str]) -> str:
    """ "; did you mean ..." for a misspelt key, or where a key of another table belongs."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.7)
    if close:
        return f'; did you mean "{close[0]}"?'
    elsewhere = sorted({p.rpartition(".")[0] for p in _key_paths() if p.rpartition(".")[2] == key})
    if elsewhere:
        tables = ", ".join(f"[{t}]" for t in elsewhere[:3]) + (
            ", ..." if len(elsewhere) > 3 else ""
        )
        return f"; it belongs in {tables}"
    return ""


def _word(typ) -> str:
    origin = typing.get_origin(typ)
    if origin in (list, types.GenericAlias) or typ is list:
        return "a list of strings"
    return _TYPE_WORDS.get(typ, str(typ))


def _coerce(typ, value) -> tuple[bool, object]:
    if typ is bool:
        return isinstance(value, bool), value
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if typ is str:
        return isinstance(value, str), value
    if typing.get_origin(typ) is list:
        return isinstance(value, list) and all(isinstance(x, str) for x in value), value
    return False, value


# Command-line flags that stand for config keys (`run --web.listen-address`):
# {section: {key: value}}, set once by the CLI and laid over the file at every
# load and reload, so a reload never moves what a flag set.
_FLAGS: dict[str, dict[str, object]] = {}


def set_flags(values: dict[str, dict[str, object]]) -> None:
    _FLAGS.clear()
    _FLAGS.update({k: dict(v) for k, v in values.items()})


def listen_flag(value: str) -> dict[str, object]:
    """``--web.listen-address`` ("host:port", "[v6]:port", ":port") as [watchdog] keys."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f'expected HOST:PORT (e.g. "127.0.0.1:9879" or "[::]:9879"), got "{value}"'
        )
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    problem = _listen_address(host or "0.0.0.0")
    if problem:
        raise ValueError(f'expected {problem} before the port, got "{value}"')
    return {"listen_address": host or "0.0.0.0", "listen_port": int(port)}


def parse(text: str, source: str = "<string>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, [f"not valid TOML: {e}"]) from None
    for section, keys in _FLAGS.items():
        if isinstance(data.get(section, {}), dict):
            data[section] = {**data.get(section, {}), **keys}
    errors: list[str] = []
    cfg = _build(Config, data, "", errors)
    errors += _pairs(cfg)
    if errors:
        raise ConfigError(source, errors)
    return dataclasses.replace(cfg, source=source)


def load(path: str | os.PathLike, *, secrets: bool = False) -> Config:
    """The config file, validated; with ``secrets``, the files it names must be readable too.

    ``check`` and ``run`` load with ``secrets=True``: a password file that does
    not exist is a config error at start (exit 2), not a login failure later.
    """
    cfg = _load(path)
    if secrets:
        errors = secret_errors(cfg)
        if errors:
            raise ConfigError(cfg.source, errors)
    return cfg


def secret_errors(cfg: Config) -> list[str]:
    """One line per secret file the config names that cannot be used (never its content)."""
    # Here, not at the top: web_security imports config.errors, and importing the
    # package from the server's side first (http_server -> web_security) would
    # otherwise meet a half-initialized config package.
    from qbt_vpn_watchdog.web_security import load_web_security

    errors = []
    for check in (lambda: read_password(cfg.qbittorrent), lambda: load_web_security(cfg.web)):
        try:
            check()
        except ConfigError as e:
            errors += e.errors
    return errors


def _load(path: str | os.PathLike) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(p), [f"cannot read: {e}"]) from None
    return parse(text, str(p))


def read_password(cfg: QbittorrentSection) -> str:
    """The WebUI password: $CREDENTIALS_DIRECTORY/<password_credential> wins, else password_file.

    Raises ``ConfigError`` naming the path (never the content). A trailing
    newline is stripped; an empty password file is allowed (no password).
    Read by ``secret_file.read_secret_file``: no symlink, a regular file of at
    most 4 KiB, a warning when group or others may read it.
    """
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    candidates = []
    if creds and cfg.password_credential:
        candidates.append(Path(creds) / cfg.password_credential)
    if cfg.password_file:
        candidates.append(Path(cfg.password_file))
    if not candidates:
        raise ConfigError(
            "qbittorrent",
            [
                "qbittorrent.password_file: not set, and no systemd credential"
                f" {cfg.password_credential!r} in $CREDENTIALS_DIRECTORY"
                " (an empty file means no password)"
            ],
        )
    for p in candidates:
        try:
            return read_secret_file(p)
        except FileNotFoundError:
            continue
        except SecretFileError as e:
            # ``from None`` keeps the OSError as __context__: an EMFILE stays
            # recognisable (sources.local_resource) for the adapter.
            raise ConfigError("qbittorrent", [f"qbittorrent.password_file: {e}"]) from None
    hint = ""
    if cfg.password_file == DEFAULT_PASSWORD_FILE:
        hint = " (the default: write the WebUI password there, or set password_file; an empty file means no password)"
    raise ConfigError(
        "qbittorrent",
        [f"qbittorrent.password_file: no such file: {', '.join(map(str, candidates))}{hint}"],
    )
