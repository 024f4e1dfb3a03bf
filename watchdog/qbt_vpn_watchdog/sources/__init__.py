"""Adapters that read the world, behind narrow typed interfaces.

Every adapter returns the project's own frozen dataclasses defined here and
nothing else, and raises ``SourceError`` (with a message fit for an operator)
for expected failures: a missing interface, a refused connection, a bad answer.
Checks never import pyroute2, dnspython or qbittorrent-api directly.

Where each lives:
  wireguard.py    peer state: kernel generic netlink (pyroute2) or UAPI socket
  links.py        rtnetlink in the namespace: link state, counters, addresses, routes
  netns.py        sockets opened inside a network namespace (never creates one)
  dns.py          one DNS query through a given resolver, inside the namespace
  http.py         one size-capped HTTP(S) GET, inside the namespace
  pmtu.py         path MTU through the tunnel: DF echoes of the tunnel's MTU, both ways
  killswitch.py   the kill switch proven by behaviour: a refused probe per interface
  tcp.py          one TCP connect from a given namespace (the forwarded port, from outside)
  qbittorrent.py  qBittorrent Web API (qbittorrent-api), one fetch per cycle
  deadline.py     one overall deadline for a network exchange (sockets shut down at it)
  bounded_requests.py  a requests transport: that deadline and a size cap on every answer
  tunnel.py       which peer, addresses and sockets are the tunnel's
  build.py        the real adapters from a config (the one place that knows them all)

Each seam is a ``Protocol`` at the end of this file; ``Sources`` holds one
adapter per seam. Tests pass fakes that have the same methods, or the real
adapters pointed at loopback servers.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Protocol

log = logging.getLogger(__name__)


class SourceError(Exception):
    """An expected failure reading a source; ``str()`` is a one-line operator message."""

    def __init__(self, message: str, *, kind: str = "unreachable") -> None:
        super().__init__(message)
        # A short machine word the checks map to their reasons, e.g.
        # "missing", "unreachable", "timeout", "bad_response", "login".
        self.kind = kind


# --- local resource errors -----------------------------------------------------
# The watchdog's own process or host ran out of something (file descriptors,
# memory, threads, socket buffers): the reading failed here, before anything
# reached the tunnel. Such a failure says nothing about the tunnel, so no check
# may call it unsafe: the runner turns the failure of any check that met one
# into reason ``local_resource`` (unknown: never starts a hold, blocks a resume).
LOCAL_RESOURCE_ERRNOS = {
    errno.EMFILE: "too many open files in the watchdog (EMFILE: see LimitNOFILE=)",
    errno.ENFILE: "too many open files on the host (ENFILE)",
    errno.ENOMEM: "out of memory (ENOMEM)",
    errno.EAGAIN: "a process or thread limit was reached (EAGAIN: see TasksMax=)",
    errno.ENOBUFS: "no buffer space (ENOBUFS)",
}


class LocalResourceError(SourceError):
    """A reading failed for lack of a local resource, not because of what it read."""

    def __init__(self, what: str, ran_out: str) -> None:
        super().__init__(f"{what}: local resource limit: {ran_out}", kind="local_resource")
        self.ran_out = ran_out


def os_error(e: OSError, what: str, kind: str = "unreachable") -> SourceError:
    """``e`` (met doing ``what``) as a LocalResourceError, or a SourceError of ``kind``."""
    ran_out = local_resource(e)
    if ran_out is not None:
        return LocalResourceError(what, ran_out)
    return SourceError(f"{what}: {e.strerror or e}", kind=kind)


def local_resource(exc: BaseException | None) -> str | None:
    """What ran out behind ``exc`` (it, or an error it was raised from), or None.

    Looks through ``__cause__`` and ``__context__``: adapters raise their own
    SourceError ``from None`` inside ``except OSError``, which keeps the
    original as ``__context__``. A ``BlockingIOError`` (EAGAIN from a
    non-blocking socket: no data yet) is ordinary I/O, not a limit; EAGAIN
    counts from thread creation and netlink.
    """
    for _ in range(16):
        if exc is None:
            return None
        if isinstance(exc, LocalResourceError):
            return exc.ran_out
        if isinstance(exc, MemoryError):
            return "out of memory (MemoryError)"
        if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
            return LOCAL_RESOURCE_ERRNOS[errno.EAGAIN]
        # pyroute2's NetlinkError carries the kernel's errno as ``code``.
        if isinstance(exc, OSError) and not isinstance(exc, BlockingIOError):
            code = exc.errno
        elif type(exc).__name__ == "NetlinkError":
            code = getattr(exc, "code", None)
        else:
            code = None
        if isinstance(code, int) and code in LOCAL_RESOURCE_ERRNOS:
            return LOCAL_RESOURCE_ERRNOS[code]
        exc = exc.__cause__ or exc.__context__
    return None


# --- WireGuard ---------------------------------------------------------------


@dataclass(frozen=True)
class WgPeer:
    public_key: str  # base64, as `wg show` prints it (public, safe to export)
    endpoint: str | None  # "host:port" or None when unknown
    last_handshake: float | None  # unix seconds; None when there has never been one
    rx_bytes: int  # bytes received on the wire from this peer, handshakes included
    tx_bytes: int  # bytes sent on the wire to this peer, handshakes included
    allowed_ips: tuple[str, ...] = ()
    persistent_keepalive: int | None = None


@dataclass(frozen=True)
class WgDevice:
    interface: str
    reader: str  # "kernel" or "uapi": which path produced this reading
    listen_port: int | None
    peers: tuple[WgPeer, ...]


# --- Links (rtnetlink) -------------------------------------------------------


@dataclass(frozen=True)
class LinkState:
    name: str
    index: int
    up: bool  # administratively up and operationally not down
    mtu: int
    addresses: tuple[str, ...]  # "10.0.0.2/32" style, IPv4 and IPv6
    # Interface counters of a WireGuard link count decrypted inner traffic.
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


@dataclass(frozen=True)
class Route:
    """A unicast route in the namespace: where packets to ``destination`` leave."""

    destination: str  # "::/0", "fd51:7a6c:1::/64"
    interface: str  # the output device's name ("" when it has none, e.g. multipath)
    table: int

    def __str__(self) -> str:
        return f"{self.destination} dev {self.interface or '?'}" + (
            f" table {self.table}" if self.table not in (254, 255) else ""
        )


@dataclass(frozen=True)
class Listener:
    """A TCP socket listening in the namespace (sock_diag), and the device it is bound to."""

    address: str  # "10.128.0.42", "::", "fe80::1"
    port: int
    ifindex: int  # SO_BINDTODEVICE index; 0 = not bound to a device

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}" + (
            f" on interface index {self.ifindex}" if self.ifindex else ""
        )


# --- DNS ---------------------------------------------------------------------


@dataclass(frozen=True)
class DnsAnswer:
    name: str
    server: str
    rcode: str  # "NOERROR", "SERVFAIL", "NXDOMAIN", ...
    addresses: tuple[str, ...]
    latency: float  # seconds, from the first send
    retransmitted: bool = False  # the answer came after the query was sent a second time


# --- Path MTU ----------------------------------------------------------------


@dataclass(frozen=True)
class PathMtu:
    """One measurement. Sizes are IP total lengths inside the tunnel, in bytes."""

    target: str
    tunnel_mtu: int
    answered: bool  # any echo came back: the far end answers this probe
    full_size: bool  # an echo of tunnel_mtu bytes came back (both directions carry full size)
    largest: int | None  # the largest echo answered (tunnel_mtu when full_size); None: unknown
    # The reply to a full-size echo sent up in small fragments came back (the way
    # down carries full size); None: not tried (full size passed, or no answer at all).
    down_full_size: bool | None
    rtt: float | None  # seconds, the fastest reply seen
    probes: int  # packets sent

    @property
    def direction(self) -> str:
        """Where large packets are lost: "down" (from the VPN), "up" (to it), or "" (unknown).

        "down" does not rule out "up" as well: with the way down losing full
        size, nothing tells whether full-size requests arrived.
        """
        if self.full_size or not self.answered:
            return ""
        if self.down_full_size is True:
            return "up"
        if self.down_full_size is False:
            return "down"
        return ""


# --- the kill switch ---------------------------------------------------------

# What one probe out of one interface met (sources/killswitch.py).
REFUSED = "refused"  # the send failed with EPERM/EACCES: a packet filter said no
OPEN = "open"  # the send went through: nothing refused it
NO_PATH = "no_path"  # the kernel has no way out there (link down, no address of that family)
VERDICTS = (REFUSED, OPEN, NO_PATH)


@dataclass(frozen=True)
class LeakProbe:
    interface: str
    family: str  # "ipv4" | "ipv6"
    verdict: str  # one of VERDICTS
    errno: str = ""  # "EPERM", "ENETUNREACH", ...; "" when the send went through


@dataclass(frozen=True)
class KillSwitchReading:
    probes: tuple[LeakProbe, ...]
    # Only read when a probe got out, to say which: the namespace's netfilter
    # tables ("inet vpn_killswitch"); None when not read or unreadable.
    tables: tuple[str, ...] | None = None

    def verdict(self, interface: str, family: str) -> str | None:
        for p in self.probes:
            if p.interface == interface and p.family == family:
                return p.verdict
        return None


# --- HTTP --------------------------------------------------------------------


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes  # at most the cap the caller gave
    latency: float


# --- TCP ---------------------------------------------------------------------


@dataclass(frozen=True)
class TcpAnswer:
    host: str
    port: int
    outcome: str  # "connected" | "refused" (a RST) | "timeout" (no answer) | "unreachable"
    latency: float  # seconds
    detail: str = ""  # the error's text when not connected


# --- qBittorrent -------------------------------------------------------------


@dataclass(frozen=True)
class TorrentBrief:
    hash: str
    name: str
    state: str  # qBittorrent's state string, e.g. "downloading", "pausedDL", "stoppedUP"
    tags: tuple[str, ...]


@dataclass(frozen=True)
class QbtState:
    version: str  # application version, e.g. "v4.5.2"
    api_version: str  # Web API version, e.g. "2.8.19"
    # Preferences
    interface_name: str  # Session\\Interface (the device); "" = any interface
    interface_address: str  # Session\\InterfaceAddress; "" = all addresses
    listen_port: int
    webui_address: str  # "*" or an address
    webui_port: int
    # Transfer info
    connection_status: str  # "connected" | "firewalled" | "disconnected"
    dht_nodes: int
    dl_speed: int  # bytes per second
    up_speed: int
    dl_total: int  # bytes this qBittorrent session
    up_total: int
    # app/networkInterfaceAddressList for interface_name (empty when it has none
    # or when interface_name is "")
    interface_addresses: tuple[str, ...] = ()
    torrents: tuple[TorrentBrief, ...] = field(default_factory=tuple)


# --- the seams ---------------------------------------------------------------


class WireguardReader(Protocol):
    """The tunnel's WireGuard device (wireguard.py: kernel netlink, UAPI, or either)."""

    def read(self) -> WgDevice: ...

    def set_endpoint(self, public_key_b64: str, endpoint: str) -> None: ...


class LinkReader(Protocol):
    """The namespace's links, routes and listening sockets (links.py)."""

    def link(self, name: str) -> LinkState | None: ...

    def route_interface(self, dst: str) -> str | None: ...

    def routes(self, family: int) -> tuple[Route, ...]: ...

    def tcp_listeners(self, port: int) -> tuple[Listener, ...]: ...


class DnsClient(Protocol):
    """DNS inside the namespace (dns.py)."""

    def nameserver(self) -> str | None: ...

    def query(
        self, name: str, server: str, timeout: float, *, retransmit_after: float | None = None
    ) -> DnsAnswer: ...


class PathMtuProber(Protocol):
    """Do full-size packets cross the tunnel both ways (pmtu.py)?"""

    def measure(
        self, target: str, mtu: int, budget: float = 8.0, thorough: bool = True
    ) -> PathMtu: ...


class KillSwitchProber(Protocol):
    """Does the kill switch refuse a packet out of every interface but ``skip``s (killswitch.py)?"""

    def probe(self, skip: tuple[str, ...]) -> KillSwitchReading: ...


class TcpProber(Protocol):
    """One TCP connect from a namespace (tcp.py): how it ended and how long it took."""

    def connect(self, netns: str | None, host: str, port: int, timeout: float) -> TcpAnswer: ...


class HttpClient(Protocol):
    """One capped HTTP(S) GET inside the namespace (http.py)."""

    def get(self, url: str, timeout: float, max_bytes: int) -> HttpResponse: ...


class QbittorrentClient(Protocol):
    """qBittorrent's Web API (qbittorrent.py): one read a cycle, and the remediation calls."""

    def state(self) -> QbtState: ...

    def webui_probe(self, url: str | None = None, timeout: float | None = None) -> HttpResponse: ...

    def held(self, tag: str) -> list[str]: ...

    def stop_active(self, tag: str) -> list[str]: ...

    def start_tagged(self, tag: str) -> list[str]: ...

    def set_binding(self, interface: str, listen_port: int | None = None) -> None: ...

    def reannounce(self) -> None: ...


class LinkEventSource(Protocol):
    """Calls ``on_event()`` (from its own thread) when the tunnel may have just gone (links.py)."""

    def start(self, on_event: Callable[[], None]) -> None: ...

    def close(self) -> None: ...


@dataclass
class Sources:
    """The adapters a run needs, built once from the config (``build.build_sources``)."""

    wireguard: WireguardReader
    links: LinkReader
    dns: DnsClient
    http: HttpClient
    qbittorrent: QbittorrentClient
    # None: only the poll loop notices the tunnel going away.
    events: LinkEventSource | None = None
    # None: the path_mtu check cannot measure (it says so and stays degraded).
    pmtu: PathMtuProber | None = None
    # None: the killswitch check cannot probe (it says so: unreadable).
    killswitch: KillSwitchProber | None = None
    # None: the port_forward check cannot connect (it says so: unreadable).
    tcp: TcpProber | None = None

    def close(self) -> None:
        """Close every adapter that holds something open (sockets, threads); best effort."""
        for f in fields(self):
            close = getattr(getattr(self, f.name), "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # noqa: BLE001 - best effort on the way out
                    log.debug("closing the %s source failed", f.name, exc_info=True)
