"""TOML configuration -> frozen dataclasses, with every error reported at once.

The dataclasses below are the schema: each field's type and metadata say what
is accepted. ``load()`` walks the TOML against them, collects every problem as
"key.path: expected ..., got ..." and raises one ``ConfigError`` listing them
all. Unknown keys are errors: a typo must never silently disable a check.

Secrets are never in the config: only paths to files holding them
(``qbittorrent.password_file``, or ``$CREDENTIALS_DIRECTORY/<name>`` under
systemd ``LoadCredential=``). ``read_password()`` reads them when needed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_PORT = 9879


class ConfigError(Exception):
    """The config is invalid; ``errors`` holds one line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(
            f"{source}: {len(errors)} error(s):\n" + "\n".join(f"  {e}" for e in errors)
        )


# --- validators: value -> error text or None ---------------------------------


def _positive(v: float) -> str | None:
    return None if v > 0 else "a positive number of seconds"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "a number of seconds >= 0"


def _port(v: int) -> str | None:
    return None if 0 < v < 65536 else "a port number 1-65535"


def _port_or_zero(v: int) -> str | None:
    return None if 0 <= v < 65536 else "a port number 1-65535, or 0 for none"


def _count(v: int) -> str | None:
    return None if v >= 1 else "a whole number >= 1"


def _one_of(*choices: str):
    def check(v: str) -> str | None:
        return None if v in choices else "one of " + ", ".join(f'"{c}"' for c in choices)

    return check


def _url(v: str) -> str | None:
    try:
        u = urlsplit(v)
    except ValueError:
        return "an http:// or https:// URL"
    if u.scheme not in ("http", "https") or not u.hostname:
        return "an http:// or https:// URL"
    return None


def _url_or_empty(v: str) -> str | None:
    return None if v == "" else _url(v)


def _ip_or_empty(v: str) -> str | None:
    if v == "":
        return None
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return 'an IP address, or ""'
    return None


def _ips(v: list) -> str | None:
    for x in v:
        try:
            ipaddress.ip_address(x)
        except ValueError:
            return "a list of IP addresses"
    return None


def _ifname(v: str) -> str | None:
    # Linux IFNAMSIZ is 16 including the NUL; no slashes or spaces.
    if 0 < len(v) < 16 and "/" not in v and not any(c.isspace() for c in v):
        return None
    return "an interface name (1-15 characters, no '/' or spaces)"


def _netns_name(v: str) -> str | None:
    if v == "" or ("/" not in v and v not in (".", "..") and not any(c.isspace() for c in v)):
        return None
    return 'a network namespace name as in `ip netns list`, or "" for the root namespace'


def _names(v: list) -> str | None:
    return (
        None if v and all(isinstance(x, str) and x for x in v) else "a non-empty list of DNS names"
    )


def _v(fn) -> dict:
    return {"check": fn}


# --- the schema ---------------------------------------------------------------


@dataclass(frozen=True)
class WatchdogSection:
    interval: float = field(default=10.0, metadata=_v(_positive))
    mode: str = field(default="enforce", metadata=_v(_one_of("enforce", "observe")))
    listen_address: str = field(
        default="127.0.0.1",
        metadata=_v(lambda v: _ip_or_empty(v) or (None if v else "an IP address")),
    )
    listen_port: int = field(default=DEFAULT_PORT, metadata=_v(_port))
    # How many recent results per check are kept for checks and the policy.
    history: int = field(default=30, metadata=_v(_count))


@dataclass(frozen=True)
class NamespaceSection:
    name: str = field(default="", metadata=_v(_netns_name))


@dataclass(frozen=True)
class WireguardSection:
    interface: str = field(default="wg0", metadata=_v(_ifname))
    reader: str = field(default="auto", metadata=_v(_one_of("auto", "kernel", "uapi")))
    uapi_dir: str = "/var/run/wireguard"


@dataclass(frozen=True)
class QbittorrentSection:
    url: str = field(default="http://127.0.0.1:8080", metadata=_v(_url))
    username: str = "admin"
    password_file: str = ""
    password_credential: str = "qbittorrent-password"
    forwarded_port: int = field(default=0, metadata=_v(_port_or_zero))
    timeout: float = field(default=5.0, metadata=_v(_positive))


# Keys every check has.
@dataclass(frozen=True)
class CheckBase:
    enabled: bool = True
    timeout: float = field(default=5.0, metadata=_v(_positive))
    interval: float = field(default=0.0, metadata=_v(_non_negative))  # 0 = every cycle
    fail_after: int = field(default=2, metadata=_v(_count))  # consecutive failures before acting
    recover_after: int = field(default=3, metadata=_v(_count))  # consecutive passes before resuming


@dataclass(frozen=True)
class HandshakeCheck(CheckBase):
    timeout: float = field(default=2.0, metadata=_v(_positive))
    max_age: float = field(default=180.0, metadata=_v(_positive))


@dataclass(frozen=True)
class ReturnPathCheck(CheckBase):
    min_tx_bytes: int = field(default=1024, metadata=_v(_count))


@dataclass(frozen=True)
class DnsCheck(CheckBase):
    timeout: float = field(default=3.0, metadata=_v(_positive))
    names: list[str] = field(default_factory=lambda: ["airvpn.org"], metadata=_v(_names))
    resolver: str = field(default="", metadata=_v(_ip_or_empty))
    slow_after: float = field(default=1.0, metadata=_v(_positive))


@dataclass(frozen=True)
class ExitIpCheck(CheckBase):
    timeout: float = field(default=10.0, metadata=_v(_positive))
    interval: float = field(default=60.0, metadata=_v(_non_negative))
    url: str = field(default="https://airvpn.org/api/whatismyip/", metadata=_v(_url))
    require_airvpn: bool = True
    allowed_ips: list[str] = field(default_factory=list, metadata=_v(_ips))
    host_public_ip: str = field(default="", metadata=_v(_ip_or_empty))


@dataclass(frozen=True)
class BindCheck(CheckBase):
    pass


@dataclass(frozen=True)
class WebuiCheck(CheckBase):
    # Exposure is a matter of configuration (a port forward, a bind address),
    # not of the moment, and each run sends probes through the tunnel to the
    # VPN server's public address: once a minute, like exit_ip. qBittorrent
    # going away is seen every cycle by bind.
    interval: float = field(default=60.0, metadata=_v(_non_negative))
    lan_url: str = field(default="", metadata=_v(_url_or_empty))
    # From inside the namespace, through the tunnel, ask whether a qBittorrent
    # WebUI answers at the VPN server's public address (the peer endpoint, when
    # it is an IP) and at probe_addresses, on the WebUI and forwarded ports.
    probe_exposure: bool = True
    probe_addresses: list[str] = field(default_factory=list, metadata=_v(_ips))


@dataclass(frozen=True)
class Ipv6Check(CheckBase):
    # One rtnetlink dump of the namespace's IPv6 routes: nothing sent.
    timeout: float = field(default=2.0, metadata=_v(_positive))


@dataclass(frozen=True)
class ChecksSection:
    handshake: HandshakeCheck = field(default_factory=HandshakeCheck)
    return_path: ReturnPathCheck = field(default_factory=ReturnPathCheck)
    dns: DnsCheck = field(default_factory=DnsCheck)
    exit_ip: ExitIpCheck = field(default_factory=ExitIpCheck)
    bind: BindCheck = field(default_factory=BindCheck)
    webui: WebuiCheck = field(default_factory=WebuiCheck)
    ipv6: Ipv6Check = field(default_factory=Ipv6Check)


def _unit_or_empty(v: str) -> str | None:
    # A systemd unit name as an argv element: never an option, never a path.
    if v == "" or (re.fullmatch(r"[A-Za-z0-9:_.@\\-]+", v) and not v.startswith("-")):
        return None
    return 'a systemd unit name such as "wg-quick-wg0.service", or "" for none'


def _argv(v: list) -> str | None:
    # An argv list, run without a shell; [] = none.
    if v == [] or (all(isinstance(x, str) and x for x in v) and not v[0].startswith("-")):
        return None
    return 'a command as a list of arguments, e.g. ["/run/current-system/sw/bin/my-restart", "wg0"], or []'


def _host_port(v: str) -> str | None:
    host, sep, port = v.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if (
        sep
        and host
        and port.isdigit()
        and 0 < int(port) < 65536
        and not any(c.isspace() for c in host)
    ):
        return None
    return '"host:port" (IPv6 as "[addr]:port")'


def _host_port_or_empty(v: str) -> str | None:
    return None if v == "" else _host_port(v)


def _host_ports(v: list) -> str | None:
    for x in v:
        if _host_port(x):
            return 'a list of "host:port" endpoints'
    return None


def _tag(v: str) -> str | None:
    # qBittorrent separates tags with commas.
    if v and "," not in v and v == v.strip():
        return None
    return "a non-empty qBittorrent tag without commas or surrounding spaces"


@dataclass(frozen=True)
class RemediationSection:
    """What the watchdog does when the tunnel is unsafe (see policy.py, actions.py)."""

    stop_torrents: bool = True
    tag: str = field(default="watchdog-stopped", metadata=_v(_tag))
    # Tier 1 re-sets the peer endpoint to this "host:port", re-resolved through
    # the host's resolver; "" = the endpoint the peer has now.
    endpoint: str = field(default="", metadata=_v(_host_port_or_empty))
    # Tier 2: `systemctl restart <restart_unit>`, or restart_command when set.
    restart_unit: str = field(default="", metadata=_v(_unit_or_empty))
    restart_command: list[str] = field(default_factory=list, metadata=_v(_argv))
    # Tier 3: rotate through these endpoints.
    alternative_endpoints: list[str] = field(default_factory=list, metadata=_v(_host_ports))
    restart_backoff_initial: float = field(default=30.0, metadata=_v(_positive))
    restart_backoff_max: float = field(default=600.0, metadata=_v(_positive))
    max_restarts_per_hour: int = field(default=6, metadata=_v(_count))
    rebind: bool = True
    action_timeout: float = field(default=30.0, metadata=_v(_positive))


@dataclass(frozen=True)
class Config:
    watchdog: WatchdogSection = field(default_factory=WatchdogSection)
    namespace: NamespaceSection = field(default_factory=NamespaceSection)
    wireguard: WireguardSection = field(default_factory=WireguardSection)
    qbittorrent: QbittorrentSection = field(default_factory=QbittorrentSection)
    checks: ChecksSection = field(default_factory=ChecksSection)
    remediation: RemediationSection = field(default_factory=RemediationSection)
    source: str = field(default="<defaults>", metadata={"internal": True})

    @property
    def netns(self) -> str | None:
        """The namespace name, or None for the root namespace."""
        return self.namespace.name or None

    def check(self, name: str) -> CheckBase:
        return getattr(self.checks, name)

    def enabled_checks(self) -> list[str]:
        return [f.name for f in dataclasses.fields(ChecksSection) if self.check(f.name).enabled]


# --- loading ------------------------------------------------------------------

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
            errors.append(f"{where}: unknown key (known: {', '.join(sorted(known))})")
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


def parse(text: str, source: str = "<string>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, [f"not valid TOML: {e}"]) from None
    errors: list[str] = []
    cfg = _build(Config, data, "", errors)
    if errors:
        raise ConfigError(source, errors)
    return dataclasses.replace(cfg, source=source)


def load(path: str | os.PathLike) -> Config:
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
    """
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    candidates = []
    if creds and cfg.password_credential:
        candidates.append(Path(creds) / cfg.password_credential)
    if cfg.password_file:
        candidates.append(Path(cfg.password_file))
    if not candidates:
        raise ConfigError(
            "qbittorrent", ["qbittorrent.password_file: not set and no systemd credential found"]
        )
    for p in candidates:
        try:
            return p.read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                "qbittorrent",
                [f"qbittorrent.password_file: cannot read {p}: {e.__class__.__name__}"],
            ) from None
    raise ConfigError(
        "qbittorrent",
        [f"qbittorrent.password_file: no such file: {', '.join(map(str, candidates))}"],
    )


def example_path() -> Path:
    return Path(__file__).with_name("example.toml")
