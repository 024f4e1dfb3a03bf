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
import difflib
import inspect
import ipaddress
import json
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


def _ipv6_prefixes(v: list) -> str | None:
    for x in v:
        try:
            ipaddress.IPv6Network(x, strict=False)
        except (ValueError, TypeError):
            return 'a list of IPv6 prefixes, e.g. ["fd51:7a6c::/48"]'
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


def _listen_address(v: str) -> str | None:
    # The same words for every wrong value, empty or not.
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return LISTEN_ADDRESS_ACCEPTS
    return None


LISTEN_ADDRESS_ACCEPTS = 'an IP address, IPv4 or IPv6 (e.g. "127.0.0.1", "0.0.0.0" or "::")'


def _key(default: object = dataclasses.MISSING, *, help: str, check=None, factory=None):
    """A schema field: its default, one line saying what it means, its validator.

    ``help`` is what ``example-config`` prints above the key, so every key
    explains itself where an operator reads it.
    """
    meta = {"help": help}
    if check is not None:
        meta["check"] = check
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _section(cls: type):
    return field(default_factory=cls, metadata={"help": ""})


# --- the schema ---------------------------------------------------------------
# Each section's docstring is the comment above it in the example config.


@dataclass(frozen=True)
class WatchdogSection:
    """The poll loop and the HTTP endpoint (/metrics, /healthz)."""

    interval: float = _key(
        10.0,
        help="Seconds between poll cycles; the 92-byte failure is caught within two.",
        check=_positive,
    )
    mode: str = _key(
        "enforce",
        help='"enforce" stops torrents and restarts the tunnel; "observe" only reports what it would do.',
        check=_one_of("enforce", "observe"),
    )
    listen_address: str = _key(
        "127.0.0.1",
        help="Address /metrics and /healthz listen on: "
        + LISTEN_ADDRESS_ACCEPTS
        + "; loopback by default.",
        check=_listen_address,
    )
    listen_port: int = _key(DEFAULT_PORT, help="TCP port of /metrics and /healthz.", check=_port)
    history: int = _key(
        30, help="Recent results kept per check, for the checks and the policy.", check=_count
    )


@dataclass(frozen=True)
class WebSection:
    """HTTPS and basic auth for /metrics and /healthz, as Prometheus exporters offer them.
    Both are off by default: plain HTTP on 127.0.0.1. Secrets come from files."""

    tls_cert_file: str = _key(
        "", help='PEM certificate (chain) to serve HTTPS with; "" = plain HTTP.'
    )
    tls_key_file: str = _key("", help="PEM private key of tls_cert_file; set both or neither.")
    tls_min_version: str = _key(
        "TLS1.2", help="Oldest TLS version accepted.", check=_one_of("TLS1.2", "TLS1.3")
    )
    basic_auth_username: str = _key(
        "", help='User name every request must present (HTTP basic auth); "" = no auth.'
    )
    basic_auth_password_file: str = _key(
        "", help="File holding that user's password; set with basic_auth_username."
    )


def _pairs(cfg: Config) -> list[str]:
    """Keys that only make sense together."""
    errors = []
    w = cfg.web
    for a, b in (
        ("tls_cert_file", "tls_key_file"),
        ("basic_auth_username", "basic_auth_password_file"),
    ):
        if bool(getattr(w, a)) != bool(getattr(w, b)):
            given, missing = (a, b) if getattr(w, a) else (b, a)
            errors.append(f"web.{missing}: needed because web.{given} is set (set both or neither)")
    return errors


@dataclass(frozen=True)
class NamespaceSection:
    """Where the tunnel and qBittorrent live."""

    name: str = _key(
        "",
        help='Network namespace holding the tunnel and qBittorrent (`ip netns list`); "" = the root namespace.',
        check=_netns_name,
    )
    built_by_vpn_netns: bool = _key(
        False,
        help="true when this project's vpn-netns.sh builds the namespace and its kill switch (the "
        "NixOS confinement module and the lab set it): a tunnel restart then re-installs the kill "
        "switch and turns IPv6 off again, so killswitch and ipv6 failures restart the tunnel; "
        "false: they only hold the torrents (a restart cannot fix another module's rules).",
    )


@dataclass(frozen=True)
class WireguardSection:
    """The tunnel qBittorrent's traffic must take."""

    interface: str = _key("wg0", help="The WireGuard interface.", check=_ifname)
    reader: str = _key(
        "auto",
        help='How to read it: "kernel" (netlink), "uapi" (wireguard-go\'s socket), "auto" (the socket if it exists).',
        check=_one_of("auto", "kernel", "uapi"),
    )
    uapi_dir: str = _key(
        "/var/run/wireguard", help="Directory of the UAPI sockets (<uapi_dir>/<interface>.sock)."
    )


@dataclass(frozen=True)
class QbittorrentSection:
    """qBittorrent's Web API. The password comes from a file, never from this one."""

    url: str = _key(
        "http://127.0.0.1:8080",
        help="The WebUI as the watchdog reaches it (the LAN side of the namespace).",
        check=_url,
    )
    username: str = _key("admin", help="WebUI user name.")
    password_file: str = _key(
        "",
        help="File holding the WebUI password (an empty file: none); must exist at start.",
    )
    password_credential: str = _key(
        "qbittorrent-password",
        help="systemd LoadCredential= name; $CREDENTIALS_DIRECTORY/<this> wins over password_file.",
    )
    forwarded_port: int = _key(
        0,
        help="Port forwarded to qBittorrent in AirVPN's client area; 0 = none (else `bind` checks it).",
        check=_port_or_zero,
    )
    timeout: float = _key(5.0, help="Seconds per Web API request.", check=_positive)


# Keys every check has. A subclass re-declares the ones whose default differs.
@dataclass(frozen=True)
class CheckBase:
    enabled: bool = _key(True, help="Run this check.")
    timeout: float = _key(
        5.0, help="Seconds the check may take before it fails with reason timeout.", check=_positive
    )
    interval: float = _key(0.0, help="Seconds between runs; 0 = every cycle.", check=_non_negative)
    fail_after: int = _key(
        2, help="Failed results in a row before remediation acts on them.", check=_count
    )
    recover_after: int = _key(
        3, help="Passed results in a row before held torrents are resumed.", check=_count
    )


@dataclass(frozen=True)
class HandshakeCheck(CheckBase):
    """Age of the last WireGuard handshake."""

    timeout: float = _key(
        2.0, help="Seconds the check may take before it fails with reason timeout.", check=_positive
    )
    max_age: float = _key(
        180.0,
        help="Seconds; WireGuard's REJECT_AFTER_TIME: older session keys carry nothing.",
        check=_positive,
    )


@dataclass(frozen=True)
class ReturnPathCheck(CheckBase):
    """Traffic goes out through the tunnel and nothing comes back: the 92-byte failure."""

    min_tx_bytes: int = _key(
        1024,
        help="Bytes sent with nothing received before that is evidence (keepalives never count).",
        check=_count,
    )


@dataclass(frozen=True)
class DnsCheck(CheckBase):
    """Lookups through the VPN's resolver, from inside the namespace."""

    timeout: float = _key(
        3.0, help="Seconds the check may take before it fails with reason timeout.", check=_positive
    )
    names: list[str] = _key(help="Names to resolve.", check=_names, factory=lambda: ["airvpn.org"])
    resolver: str = _key(
        "",
        help='Resolver address; "" = the first nameserver of the namespace\'s resolv.conf.',
        check=_ip_or_empty,
    )
    slow_after: float = _key(
        1.0,
        help='Seconds; a slower answer is degraded (reason "slow"). Unanswered by then: asked again.',
        check=_positive,
    )


def _ipv4_or_empty(v: str) -> str | None:
    if v == "":
        return None
    try:
        ipaddress.IPv4Address(v)
    except ValueError:
        return 'an IPv4 address inside the tunnel, or "" for the VPN\'s resolver'
    return None


@dataclass(frozen=True)
class PathMtuCheck(CheckBase):
    """Packets as large as the tunnel's MTU cross it both ways: a DF-marked ICMP echo of that
    size to the VPN's gateway each cycle. Reported only (a smaller MTU is a configuration
    change: docs/runbook.md#qbtvpntunnelmtublackhole). Needs CAP_NET_RAW."""

    # Healthy: two echoes, a millisecond. A black hole is confirmed in about 2 s
    # plus 4 s (the size and the way); the check's own budget keeps it under this.
    timeout: float = _key(
        10.0, help="Seconds the check may take before it fails with reason timeout.", check=_positive
    )
    target: str = _key(
        "",
        help='Who answers the echoes (IPv4, in the tunnel); "" = the VPN\'s resolver (its gateway).',
        check=_ipv4_or_empty,
    )


@dataclass(frozen=True)
class ExitIpCheck(CheckBase):
    """The address the internet sees, asked of an exit-IP endpoint through the tunnel."""

    timeout: float = _key(
        10.0,
        help="Seconds the check may take before it fails with reason timeout.",
        check=_positive,
    )
    interval: float = _key(
        60.0,
        help="Seconds between runs; AirVPN bans more than 600 requests per 10 minutes.",
        check=_non_negative,
    )
    url: str = _key("https://airvpn.org/api/whatismyip/", help="The endpoint.", check=_url)
    require_airvpn: bool = _key(
        True, help='Pass only when the endpoint answers "airvpn": true (else allowed_ips decide).'
    )
    allowed_ips: list[str] = _key(
        help="Exit addresses that pass whatever the endpoint says.", check=_ips, factory=list
    )
    host_public_ip: str = _key(
        "",
        help='The host\'s own public address: an exit IP equal to it is a leak; "" = unknown.',
        check=_ip_or_empty,
    )


@dataclass(frozen=True)
class BindCheck(CheckBase):
    """qBittorrent bound to the tunnel, listening on it (and on forwarded_port)."""


@dataclass(frozen=True)
class WebuiCheck(CheckBase):
    """The WebUI answers on the LAN and not through the tunnel."""

    # Exposure is a matter of configuration (a port forward, a bind address),
    # not of the moment, and each run sends probes through the tunnel to the
    # VPN server's public address: once a minute, like exit_ip. qBittorrent
    # going away is seen every cycle by bind.
    interval: float = _key(
        60.0,
        help="Seconds between runs; each run probes through the tunnel.",
        check=_non_negative,
    )
    lan_url: str = _key(
        "",
        help='The URL the LAN uses to reach the WebUI; "" = qbittorrent.url.',
        check=_url_or_empty,
    )
    # From inside the namespace, through the tunnel, ask whether a qBittorrent
    # WebUI answers at the VPN server's public address (the peer endpoint, when
    # it is an IP) and at probe_addresses, on the WebUI and forwarded ports.
    probe_exposure: bool = _key(
        True,
        help="Ask through the tunnel whether the WebUI answers at the VPN server and the exits.",
    )
    probe_addresses: list[str] = _key(
        help="More public addresses to probe that way.", check=_ips, factory=list
    )


@dataclass(frozen=True)
class Ipv6Check(CheckBase):
    """No IPv6 route leaves the namespace except through the tunnel (IPv6 is
    blocked there; this reads the routing table and sends nothing)."""

    timeout: float = _key(2.0, help="Seconds for one dump of the IPv6 routes.", check=_positive)
    lan_prefixes: list[str] = _key(
        help="The LAN's own IPv6 prefixes: a route to one of them beside the tunnel carries "
        "nothing to the internet (degraded, not unsafe), e.g. a ULA on the LAN veth.",
        check=_ipv6_prefixes,
        factory=list,
    )


@dataclass(frozen=True)
class KillswitchCheck(CheckBase):
    """The kill switch refuses a packet out of every interface but the tunnel, IPv4 and IPv6
    (a probe that cannot leave the host: link-local multicast with TTL 0; docs/checks.md)."""

    timeout: float = _key(
        2.0, help="Seconds the check may take before it fails with reason timeout.", check=_positive
    )


@dataclass(frozen=True)
class PortForwardCheck(CheckBase):
    """The forwarded port answers from outside the tunnel: a TCP connect from the host to
    the exit address and qbittorrent.forwarded_port, which AirVPN forwards to qBittorrent."""

    # Each run is one SYN over the internet to the VPN's exit and back in
    # through the tunnel; a closed port stalls seeding but leaks nothing.
    interval: float = _key(
        300.0,
        help="Seconds between runs; each run is one TCP connect over the internet.",
        check=_non_negative,
    )
    exit_ip: str = _key(
        "",
        help='The exit address AirVPN forwards the port on; "" = the one exit_ip saw last.',
        check=_ip_or_empty,
    )
    probe_netns: str = _key(
        "",
        help='Network namespace the connect leaves from; "" = the root namespace (the host: '
        "outside the tunnel, as any peer on the internet).",
        check=_netns_name,
    )


@dataclass(frozen=True)
class ChecksSection:
    """One table per check. Each has enabled, timeout, interval, fail_after and recover_after."""

    handshake: HandshakeCheck = _section(HandshakeCheck)
    return_path: ReturnPathCheck = _section(ReturnPathCheck)
    dns: DnsCheck = _section(DnsCheck)
    path_mtu: PathMtuCheck = _section(PathMtuCheck)
    exit_ip: ExitIpCheck = _section(ExitIpCheck)
    bind: BindCheck = _section(BindCheck)
    webui: WebuiCheck = _section(WebuiCheck)
    ipv6: Ipv6Check = _section(Ipv6Check)
    killswitch: KillswitchCheck = _section(KillswitchCheck)
    port_forward: PortForwardCheck = _section(PortForwardCheck)


@dataclass(frozen=True)
class RemediationSection:
    """What mode = "enforce" does once an unsafe check (return_path, handshake, bind,
    a DNS or exit-IP leak, an IPv6 route beside the tunnel) has failed fail_after times in a row; degraded ones are
    only reported. Tunnel restarts go in tiers, each failed one escalates:
    endpoint, then restart_unit/restart_command, then alternative_endpoints."""

    stop_torrents: bool = _key(
        True,
        help="Stop active torrents and tag them; resume only tagged ones (yours stay as you left them).",
    )
    tag: str = _key(
        "watchdog-stopped", help="The tag that marks what the watchdog stopped.", check=_tag
    )
    endpoint: str = _key(
        "",
        help='Tier 1: re-set the peer endpoint to this "host:port" (host resolver); "" = its current one.',
        check=_host_port_or_empty,
    )
    restart_unit: str = _key(
        "",
        help='Tier 2: `systemctl restart` this unit; "" = skip (unless restart_command is set).',
        check=_unit_or_empty,
    )
    restart_command: list[str] = _key(
        help="Tier 2 instead of the unit: this argv, run without a shell; [] = none.",
        check=_argv,
        factory=list,
    )
    alternative_endpoints: list[str] = _key(
        help='Tier 3: rotate through these "host:port" endpoints; [] = skip.',
        check=_host_ports,
        factory=list,
    )
    restart_backoff_initial: float = _key(
        30.0,
        help="Seconds to wait after the first restart (jitter: half to all); doubles after each.",
        check=_positive,
    )
    restart_backoff_max: float = _key(
        600.0, help="Longest wait between restarts, in seconds.", check=_positive
    )
    max_restarts_per_hour: int = _key(
        6,
        help='Restarts allowed in any hour; past it the state is "gave_up" and torrents stay stopped.',
        check=_count,
    )
    rebind: bool = _key(
        True, help="After a restart, or when bind fails, set qBittorrent's interface and port back."
    )
    action_timeout: float = _key(
        30.0,
        help="Seconds an action may take before it counts as failed (and is killed).",
        check=_positive,
    )


@dataclass(frozen=True)
class Config:
    """qbt-vpn-watchdog configuration: every key, its default, what it means.

    Every key is optional; the value shown is its default. Unknown keys are
    errors (a typo must not silently disable a check). Durations are seconds.
    Secrets never go in this file, only paths to files that hold them.
    Printed by `qbt-vpn-watchdog example-config`, from the schema in
    watchdog/qbt_vpn_watchdog/config.py."""

    watchdog: WatchdogSection = _section(WatchdogSection)
    web: WebSection = _section(WebSection)
    namespace: NamespaceSection = _section(NamespaceSection)
    wireguard: WireguardSection = _section(WireguardSection)
    qbittorrent: QbittorrentSection = _section(QbittorrentSection)
    checks: ChecksSection = _section(ChecksSection)
    remediation: RemediationSection = _section(RemediationSection)
    source: str = field(default="<defaults>", compare=False, metadata={"internal": True})

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


def parse(text: str, source: str = "<string>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(source, [f"not valid TOML: {e}"]) from None
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
    """The shipped example: ``render_example()``'s output (a test keeps it so)."""
    return Path(__file__).with_name("example.toml")


def _doc(cls: type) -> list[str]:
    doc = cls.__doc__ or ""
    if doc.startswith(cls.__name__ + "("):  # dataclass's generated signature: no docstring
        return []
    return inspect.cleandoc(doc).splitlines()


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for the values the schema allows
    if isinstance(value, list):
        return "[" + ", ".join(_toml(x) for x in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _render_table(cls: type, path: str, out: list[str]) -> None:
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    scalars = [f for f in fields if not dataclasses.is_dataclass(hints[f.name])]
    defaults = cls()
    if path:
        out.append("")
        out += [f"# {line}".rstrip() for line in _doc(cls)]
        if scalars:
            out.append(f"[{path}]")
    for f in scalars:
        out.append(f"# {f.metadata['help']}")
        out.append(f"{f.name} = {_toml(getattr(defaults, f.name))}")
    for f in fields:
        if dataclasses.is_dataclass(hints[f.name]):
            _render_table(hints[f.name], f"{path}.{f.name}" if path else f.name, out)


def render_example() -> str:
    """The example config, from the schema: every key with its default and its meaning."""
    out = [f"# {line}".rstrip() for line in _doc(Config)]
    _render_table(Config, "", out)
    return "\n".join(out) + "\n"
