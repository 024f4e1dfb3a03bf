"""The schema: one frozen dataclass per table, each field's type, default, help and validator.

Each section's docstring is the comment above it in the example config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from qbt_vpn_watchdog.config.fields import (
    LISTEN_ADDRESS_ACCEPTS,
    _argv,
    _count,
    _host_port_or_empty,
    _host_ports,
    _ifname,
    _interval,
    _ip_or_empty,
    _ips,
    _ipv4_or_empty,
    _ipv6_prefixes,
    _key,
    _listen_address,
    _max_connections,
    _names,
    _netns_name,
    _one_of,
    _port,
    _port_or_zero,
    _positive,
    _section,
    _tag,
    _timeout,
    _unit_or_empty,
    _url,
    _url_or_empty,
)

DEFAULT_PORT = 9879
# The one file an empty config needs (README "Configure"; systemd/'s unit hands
# the same file over as its credential).
DEFAULT_PASSWORD_FILE = "/etc/qbt-vpn-watchdog/webui-password"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "logfmt", "json")


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
        help='"enforce" stops torrents and restarts the tunnel; "observe" only reports what it would do.'
        ' On a new host start with "observe"; switch to "enforce" once `check` passes and the'
        ' log\'s "would ..." lines are what you want done.',
        check=_one_of("enforce", "observe"),
        instead='mode = "observe"',
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
    process_metrics: bool = _key(
        True,
        help="Serve prometheus_client's process_* series (the daemon's CPU, memory, open files).",
    )
    log_level: str = _key(
        "info",
        help=f"{', '.join(LOG_LEVELS)}; the flag --log.level and $QBT_VPN_WATCHDOG_LOG_LEVEL win.",
        check=_one_of(*LOG_LEVELS),
    )
    log_format: str = _key(
        "text",
        help='"text" (LEVEL message), "logfmt" or "json"; under journald every line keeps its'
        " priority prefix. --log.format and $QBT_VPN_WATCHDOG_LOG_FORMAT win.",
        check=_one_of(*LOG_FORMATS),
    )


@dataclass(frozen=True)
class WebSection:
    """HTTPS and basic auth for /metrics, /healthz and /readyz, as Prometheus exporters offer
    them. Both are off by default: plain HTTP on 127.0.0.1. Secrets come from files.
    Prefer config_file (exporter-toolkit's web-config.yml, bcrypt hashes) to the tls_* and
    basic_auth_* keys below, which stay for configs that use them."""

    config_file: str = _key(
        "",
        help="exporter-toolkit's web-config.yml (as node_exporter's --web.config.file): TLS and"
        ' bcrypt users; needs the [web] extra (bcrypt, PyYAML); "" = the keys below.',
    )
    max_connections: int = _key(
        40,
        help="Connections served at once; at the cap a new one replaces the oldest that has not"
        " sent a whole request, else gets 503. Keep it well under LimitNOFILE.",
        check=_max_connections,
    )
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
        DEFAULT_PASSWORD_FILE,
        help="File holding the WebUI password (an empty file: none); must exist at start, unless"
        ' the systemd credential below is there. "" = the credential only.',
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
    timeout: float = _key(
        5.0,
        help="Seconds for each Web API call, all of it (connect, answer, body), however slowly qBittorrent answers.",
        check=_positive,
    )


# Keys every check has. A subclass re-declares the ones whose default differs.
@dataclass(frozen=True)
class CheckBase:
    enabled: bool = _key(True, help="Run this check.")
    timeout: float = _timeout(5.0)
    interval: float = _interval(0.0)
    fail_after: int = _key(
        2, help="Failed results in a row before remediation acts on them.", check=_count
    )
    recover_after: int = _key(
        3, help="Passed results in a row before held torrents are resumed.", check=_count
    )


@dataclass(frozen=True)
class HandshakeCheck(CheckBase):
    """Age of the last WireGuard handshake."""

    timeout: float = _timeout(2.0)
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

    timeout: float = _timeout(3.0)
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


@dataclass(frozen=True)
class PathMtuCheck(CheckBase):
    """Packets as large as the tunnel's MTU cross it both ways: a DF-marked ICMP echo of that
    size to the VPN's gateway each cycle. Reported only (a smaller MTU is a configuration
    change: docs/runbook.md#qbtvpntunnelmtublackhole). Needs CAP_NET_RAW."""

    # Healthy: two echoes, a millisecond. A black hole is confirmed in about 2 s
    # plus 4 s (the size and the way); the check's own budget keeps it under this.
    timeout: float = _timeout(10.0)
    target: str = _key(
        "",
        help='Who answers the echoes (IPv4, in the tunnel); "" = the VPN\'s resolver (its gateway).',
        check=_ipv4_or_empty,
    )


@dataclass(frozen=True)
class ExitIpCheck(CheckBase):
    """The address the internet sees, asked of an exit-IP endpoint through the tunnel."""

    timeout: float = _timeout(10.0)
    interval: float = _interval(60.0, "AirVPN bans more than 600 requests per 10 minutes.")
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
    interval: float = _interval(60.0, "Each run probes through the tunnel.")
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

    # Its help once said "Seconds for one dump of the IPv6 routes.", the one
    # timeout that had drifted from the others' words: now one helper says them.
    timeout: float = _timeout(2.0)
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

    timeout: float = _timeout(2.0)


@dataclass(frozen=True)
class PortForwardCheck(CheckBase):
    """The forwarded port answers from outside the tunnel: a TCP connect from the host to
    the exit address and qbittorrent.forwarded_port, which AirVPN forwards to qBittorrent.
    Without a forwarded port it only reports not_configured: set enabled = false then."""

    # Each run is one SYN over the internet to the VPN's exit and back in
    # through the tunnel; a closed port stalls seeding but leaks nothing.
    interval: float = _interval(300.0, "Each run is one TCP connect over the internet.")
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

    Every key is optional; the value shown is its default. One file must exist:
    the WebUI password, at qbittorrent.password_file (an empty file: none),
    unless systemd hands it over as a credential. Unknown keys are errors (a
    typo must not silently disable a check). Durations are seconds. Secrets
    never go in this file, only paths to files that hold them.
    Printed by `qbt-vpn-watchdog example-config`, from the schema in
    watchdog/qbt_vpn_watchdog/config/schema.py."""

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
