"""Link state, counters, addresses and routes (rtnetlink), and listening sockets (sock_diag).

``Links(netns)`` keeps one pyroute2 ``IPRoute`` socket for its lifetime (it is
called every cycle for years), owned by one thread (see netlink_thread for why),
and reopens it after an error. A missing namespace is a
``SourceError(kind="missing")`` naming it: pyroute2 creates a missing
namespace by default, so the name is checked first and ``flags=0`` is passed.

For a WireGuard link the interface counters count decrypted inner traffic
(what went through the tunnel), unlike the peer counters which count bytes on
the wire including handshakes.

Listening sockets come from a second netlink socket (NETLINK_SOCK_DIAG, what
`ss` reads), opened inside the namespace on its own worker thread: they say
which device a socket is bound to, which qBittorrent's preferences cannot.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import Any

from pyroute2 import DiagSocket, IPRoute
from pyroute2.netlink.diag import SS_LISTEN
from pyroute2.netlink.exceptions import NetlinkError

from watchdog.sources import LinkState, Listener, SourceError
from watchdog.sources.netlink_thread import NetlinkThread, closed_on_failure, netns_ident
from watchdog.sources.netns import entered

IFF_UP = 0x1
# Operational states that mean "cannot pass traffic". A WireGuard or TUN link
# that is up reports UNKNOWN (it has no carrier to speak of), so anything else
# counts as up.
_DOWN_OPERSTATES = frozenset({"DOWN", "LOWERLAYERDOWN", "NOTPRESENT"})
RTN_UNICAST, RTN_LOCAL = 1, 2
# `ip route get` answers for these without an error on some kernels; they do
# not leave through any interface.
_NO_ROUTE_ERRNOS = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EINVAL, errno.EPERM}
)


_IPRoute = closed_on_failure(IPRoute)
_DiagSocket = closed_on_failure(DiagSocket)


class Links:
    def __init__(self, netns: str | None, timeout: float = 5.0) -> None:
        self.netns = netns or None
        self._in = f" in namespace {self.netns}" if self.netns else ""
        self._nl = NetlinkThread(
            self._open, netns=self.netns, name=f"rtnl-{self.netns or 'root'}", timeout=timeout
        )
        self._diag = NetlinkThread(
            self._open_diag, netns=self.netns, name=f"diag-{self.netns or 'root'}", timeout=timeout
        )

    def _open(self) -> Any:
        try:
            # flags=0: never create the namespace (NetlinkThread checked it exists).
            return _IPRoute(netns=self.netns, flags=0) if self.netns else _IPRoute()
        except FileNotFoundError:  # deleted since the check
            netns_ident(self.netns)
            raise SourceError(
                f"cannot enter network namespace {self.netns}", kind="missing"
            ) from None
        except OSError as e:
            raise SourceError(
                f"rtnetlink socket{self._in}: {e.strerror or e}", kind="unreachable"
            ) from None

    def _open_diag(self) -> Any:
        # Runs on the diag worker thread: the netlink socket is created inside
        # the namespace (pyroute2's DiagSocket takes no netns argument).
        try:
            with entered(self.netns):
                ds = _DiagSocket()
            ds.bind()
            return ds
        except OSError as e:
            raise SourceError(
                f"sock_diag socket{self._in}: {e.strerror or e}", kind="unreachable"
            ) from None

    def _call(self, fn, what: str, nl: NetlinkThread | None = None):
        try:
            return (nl or self._nl).call(fn, what + self._in)
        except NetlinkError as e:
            raise SourceError(
                f"{what}{self._in}: {os.strerror(e.code)}", kind="unreachable"
            ) from None

    def link(self, name: str) -> LinkState | None:
        """The link called ``name``, or None when it does not exist."""

        def get(ipr: Any) -> LinkState | None:
            try:
                msgs = list(ipr.link("get", ifname=name))
            except NetlinkError as e:
                if e.code == errno.ENODEV:
                    return None
                raise
            if not msgs:
                return None
            msg = msgs[0]
            index = msg["index"]
            addrs = []
            for a in ipr.addr("dump", index=index):
                if a["index"] != index:  # older kernels ignore the filter
                    continue
                addr = a.get("IFA_LOCAL") or a.get("IFA_ADDRESS")
                if addr:
                    addrs.append(f"{addr}/{a['prefixlen']}")
            return link_state(msg, addrs)

        return self._call(get, f"link {name}")

    def route_interface(self, dst: str) -> str | None:
        """The output interface of ``ip route get dst``, or None when dst is not routable.

        None for unreachable, blackhole and prohibit routes and for no route
        at all. ValueError when ``dst`` is not an IP address.
        """
        ip = ipaddress.ip_address(dst)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET

        def get(ipr: Any) -> str | None:
            try:
                msgs = list(ipr.route("get", dst=str(ip), family=family))
            except NetlinkError as e:
                if e.code in _NO_ROUTE_ERRNOS:
                    return None
                raise
            if not msgs or msgs[0]["type"] not in (RTN_UNICAST, RTN_LOCAL):
                return None
            oif = msgs[0].get("RTA_OIF")
            if oif is None:
                return None
            try:
                links = list(ipr.link("get", index=oif))
            except NetlinkError as e:
                if e.code == errno.ENODEV:  # deleted between the two calls
                    return None
                raise
            return links[0].get("IFLA_IFNAME") if links else None

        return self._call(get, f"route to {ip}")

    def tcp_listeners(self, port: int) -> tuple[Listener, ...]:
        """The TCP sockets listening on ``port`` in the namespace (IPv4 and IPv6)."""

        def get(ds: Any) -> tuple[Listener, ...]:
            out = []
            for family in (socket.AF_INET, socket.AF_INET6):
                for m in ds.get_sock_stats(family=family, states=1 << SS_LISTEN):
                    if m["idiag_sport"] == port:
                        out.append(listener(m))
            return tuple(out)

        return self._call(get, f"listening sockets on port {port}", self._diag)

    def close(self) -> None:
        self._nl.close()
        self._diag.close()


def link_state(msg: Any, addresses: list[str]) -> LinkState:
    """Build a LinkState from a pyroute2 ifinfmsg and the link's addresses."""
    stats = msg.get("IFLA_STATS64") or msg.get("IFLA_STATS") or {}
    operstate = msg.get("IFLA_OPERSTATE") or "UNKNOWN"
    return LinkState(
        name=msg.get("IFLA_IFNAME") or "",
        index=int(msg["index"]),
        up=bool(msg["flags"] & IFF_UP) and operstate not in _DOWN_OPERSTATES,
        mtu=int(msg.get("IFLA_MTU") or 0),
        addresses=tuple(addresses),
        rx_bytes=int(stats.get("rx_bytes", 0)),
        tx_bytes=int(stats.get("tx_bytes", 0)),
        rx_packets=int(stats.get("rx_packets", 0)),
        tx_packets=int(stats.get("tx_packets", 0)),
    )


def listener(msg: Any) -> Listener:
    """A Listener from a pyroute2 inet_diag_msg."""
    return Listener(
        address=str(msg["idiag_src"]), port=int(msg["idiag_sport"]), ifindex=int(msg["idiag_if"])
    )
