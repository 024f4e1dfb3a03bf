"""Link state, counters, addresses and routes (rtnetlink), and listening sockets (sock_diag).

All through pyroute2, the project's netlink library: ``IPRoute`` for links,
addresses and routes, ``DiagSocket`` for listening sockets, and pyroute2's
rtnetlink parser for link events. Only the modules used are imported, not the
package's ``__init__`` (see ``netlink_thread.pyroute2_module``).

``Links(netns)`` keeps one ``IPRoute`` and one ``DiagSocket`` for its lifetime
(it is called every cycle for years), each owned by one worker thread (see
netlink_thread for why) and reopened after an error. Both are created inside
the namespace with setns (``netns.entered``), not with pyroute2's ``netns=``
(which forks a child per socket and creates a missing namespace by default);
a missing namespace is a ``SourceError(kind="missing")`` naming it, and is
never created.

For a userspace WireGuard (wireguard-go, boringtun: a TUN device) the
interface counters count decrypted inner traffic, unlike the peer counters
which count bytes on the wire including handshakes. The kernel's WireGuard
counts every message at its wire size on the link too, handshakes included
(measured in tests/vm); return_path tells them apart by the packet count.

Listening sockets come from NETLINK_SOCK_DIAG (what `ss` reads): they say
which device a socket is bound to, which qBittorrent's preferences cannot.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

from qbt_vpn_watchdog.sources import LinkState, Listener, Route, SourceError
from qbt_vpn_watchdog.sources.netlink_thread import (
    NetlinkError,
    NetlinkThread,
    closed_on_failure,
    pyroute2_module,
)
from qbt_vpn_watchdog.sources.netns import entered, netns_ident, socket_in

_iproute = pyroute2_module("pyroute2.iproute.linux")
_diag = pyroute2_module("pyroute2.netlink.diag")
_rtnl = pyroute2_module("pyroute2.netlink.rtnl")
_marshal = pyroute2_module("pyroute2.netlink.rtnl.marshal")

_IPRoute = closed_on_failure(_iproute.IPRoute)
_DiagSocket = closed_on_failure(_diag.DiagSocket)

IFF_UP = 0x1
# Operational states that mean "cannot pass traffic". A WireGuard or TUN link
# that is up reports UNKNOWN (it has no carrier to speak of), so anything else
# counts as up.
_DOWN_OPERSTATES = frozenset({"DOWN", "LOWERLAYERDOWN", "NOTPRESENT"})
RTN_UNICAST, RTN_LOCAL = 1, 2
TCP_LISTEN = _diag.SS_LISTEN
# Errors of `ip route get` that mean "no route", not "netlink broke".
NO_ROUTE_ERRNOS = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EINVAL, errno.EPERM}
)


class Links:
    def __init__(self, netns: str | None, timeout: float = 5.0) -> None:
        self.netns = netns or None
        self._in = f" in namespace {self.netns}" if self.netns else ""
        where = self.netns or "root"
        self._nl = NetlinkThread(
            self._open, netns=self.netns, name=f"rtnl-{where}", timeout=timeout
        )
        self._diag = NetlinkThread(
            self._open_diag, netns=self.netns, name=f"diag-{where}", timeout=timeout
        )

    def _open(self) -> Any:
        # Runs on the worker thread. groups=0: requests only, no multicast
        # messages piling up between cycles.
        try:
            with entered(self.netns):
                return _IPRoute(groups=0)
        except OSError as e:
            raise SourceError(
                f"rtnetlink socket{self._in}: {e.strerror or e}", kind="unreachable"
            ) from None

    def _open_diag(self) -> Any:
        # pyroute2's DiagSocket takes no netns argument: made inside the namespace.
        try:
            with entered(self.netns):
                ds = _DiagSocket()
            try:
                ds.bind()
            except BaseException:
                ds.close()
                raise
            return ds
        except OSError as e:
            raise SourceError(
                f"sock_diag socket{self._in}: {e.strerror or e}", kind="unreachable"
            ) from None

    def _call(self, fn: Callable[[Any], Any], what: str, nl: NetlinkThread | None = None) -> Any:
        try:
            return (nl or self._nl).call(fn, what + self._in)
        except NetlinkError as e:
            raise SourceError(
                f"{what}{self._in}: {os.strerror(e.code)}", kind="unreachable"
            ) from None

    @staticmethod
    def _link_msg(ipr: Any, **key: Any) -> Any:
        """The RTM_NEWLINK of one link, or None when there is no such link (ENODEV)."""
        try:
            msgs = ipr.link("get", **key)
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return None
            raise
        return msgs[0] if msgs else None

    def link(self, name: str) -> LinkState | None:
        """The link called ``name``, or None when it does not exist."""

        def get(ipr: Any) -> LinkState | None:
            msg = self._link_msg(ipr, ifname=name)
            if msg is None:
                return None
            index = msg["index"]
            addrs = []
            for a in ipr.addr("dump"):
                if a["index"] != index:
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
        # A zone ("fe80::1%eth0", as resolv.conf may name a link-local resolver) is
        # not part of the address netlink takes.
        ip = ipaddress.ip_address(dst.partition("%")[0])
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET

        def get(ipr: Any) -> str | None:
            try:
                msgs = ipr.route("get", dst=str(ip), family=family)
            except NetlinkError as e:
                if e.code in NO_ROUTE_ERRNOS:
                    return None
                raise
            if not msgs or msgs[0]["type"] not in (RTN_UNICAST, RTN_LOCAL):
                return None
            oif = msgs[0].get("RTA_OIF")
            if oif is None:
                return None
            link = self._link_msg(ipr, index=oif)  # None: deleted between the two requests
            return link.get("IFLA_IFNAME") if link is not None else None

        return self._call(get, f"route to {ip}")

    def routes(self, family: int) -> tuple[Route, ...]:
        """Every unicast route of ``family`` (socket.AF_INET/AF_INET6) in every table.

        What `ip -6 route show table all` lists as plain routes: local,
        broadcast, multicast, unreachable, blackhole and prohibit routes carry
        nothing out of the namespace and are left out. A multipath route (what
        a LAN with two IPv6 routers advertising gives) is one Route per next
        hop, each with its own device: it has no RTA_OIF of its own, and a
        device-less route could be matched to no kill-switch verdict.
        """
        name = "IPv6" if family == socket.AF_INET6 else "IPv4"

        def get(ipr: Any) -> tuple[Route, ...]:
            names: dict[int, str] = {}

            def dev(oif: int | None) -> str:
                if oif is None:
                    return ""
                if oif not in names:
                    link = self._link_msg(ipr, index=oif)
                    names[oif] = (link.get("IFLA_IFNAME") or "") if link is not None else ""
                return names[oif]

            out = []
            for r in ipr.route("dump", family=family):
                if r["family"] != family or r["type"] != RTN_UNICAST:
                    continue
                dst = r.get("RTA_DST") or ("::" if family == socket.AF_INET6 else "0.0.0.0")
                where = f"{dst}/{r['dst_len']}"
                table = r.get("RTA_TABLE") or r["table"]
                hops = r.get("RTA_MULTIPATH") or ()
                oifs = [nh["oif"] for nh in hops] if hops else [r.get("RTA_OIF")]
                out.extend(Route(where, dev(oif), table) for oif in oifs)
            return tuple(out)

        return self._call(get, f"{name} routes")

    def tcp_listeners(self, port: int) -> tuple[Listener, ...]:
        """The TCP sockets listening on ``port`` in the namespace (IPv4 and IPv6)."""

        def get(ds: Any) -> tuple[Listener, ...]:
            out = []
            for family in (socket.AF_INET, socket.AF_INET6):
                for m in ds.get_sock_stats(family=family, states=1 << TCP_LISTEN):
                    if m["idiag_sport"] == port:
                        out.append(listener(m))
            return tuple(out)

        return self._call(get, f"listening sockets on port {port}", self._diag)

    def close(self) -> None:
        self._nl.close()
        self._diag.close()


def link_state(msg: Any, addresses: list[str]) -> LinkState:
    """Build a LinkState from a pyroute2 ifinfmsg (RTM_NEWLINK) and the link's addresses."""
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
    """A Listener from a pyroute2 inet_diag_msg: address, port, bound interface index."""
    return Listener(
        address=str(msg["idiag_src"]), port=int(msg["idiag_sport"]), ifindex=int(msg["idiag_if"])
    )


class LinkEvents:
    """Wakes the loop when the tunnel may have just gone: rtnetlink events in the namespace.

    A poll loop sees a deleted tunnel at its next cycle, up to an interval
    later. The kernel announces it at once (RTM_DELLINK, RTM_DELADDR, an
    RTM_NEWLINK with IFF_UP cleared), so this thread listens on the
    namespace's link and address multicast groups and calls ``on_event()``
    for those messages about the tunnel interface (addresses: any but IPv6
    link-local; the namespace holds only lo, the tunnel and the LAN veth).
    "Down" is read from the notification's change mask, so a link created
    down is no event. Links coming *up* are left to the next cycle, so events
    never hurry a recovery along.

    The subscription is a netlink socket bound to those groups, read with
    select() so the thread can stop, and its datagrams are parsed by pyroute2's
    rtnetlink parser (``MarshalRtnl``): an ``IPRoute`` reads through an event
    loop that may take several datagrams off the socket at once, which select()
    would then not see.

    The socket is (re)made inside the namespace; while the namespace does not
    exist the thread waits and tries again (never creating it), and when it is
    re-created under the same name, it follows.
    """

    GROUPS = _rtnl.RTMGRP_LINK | _rtnl.RTMGRP_IPV4_IFADDR | _rtnl.RTMGRP_IPV6_IFADDR

    def __init__(self, netns: str | None, interface: str, poll: float = 1.0) -> None:
        self.netns = netns or None
        self.interface = interface
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_event: Callable[[], None] = lambda: None
        self._marshal = _marshal.MarshalRtnl()  # pyroute2's rtnetlink parser

    def start(self, on_event: Callable[[], None]) -> None:
        self._on_event = on_event
        self._thread = threading.Thread(
            target=self._run, name=f"link-events-{self.netns or 'root'}", daemon=True
        )
        self._thread.start()

    def _open(self) -> tuple[socket.socket, tuple[int, int] | None]:
        ident = netns_ident(self.netns)
        s = socket_in(self.netns, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            s.bind((0, self.GROUPS))
        except OSError:
            s.close()
            raise
        return s, ident

    def _run(self) -> None:
        sock: socket.socket | None = None
        ident = None
        while not self._stop.is_set():
            try:
                if sock is None or netns_ident(self.netns) != ident:
                    if sock is not None:
                        sock.close()
                    sock = None
                    sock, ident = self._open()
                ready, _, _ = select.select([sock], [], [], self.poll)
                if ready and self._bad_news(sock.recv(1 << 16)):
                    self._on_event()
            except (SourceError, OSError) as e:
                if isinstance(e, OSError) and e.errno == errno.ENOBUFS:
                    self._on_event()  # messages were lost: something happened
                    continue
                if sock is not None:
                    sock.close()
                sock = None
                self._stop.wait(self.poll)  # the namespace is gone: look again later
        if sock is not None:
            sock.close()

    def _bad_news(self, data: bytes) -> bool:
        for msg in self._marshal.parse(data):
            kind = msg["header"]["type"]
            if kind == _rtnl.RTM_DELADDR:
                addr = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
                # IPv6 link-local addresses come and go with every veth's carrier.
                if addr and not ipaddress.ip_interface(addr).is_link_local:
                    return True
            if kind in (_rtnl.RTM_DELLINK, _rtnl.RTM_NEWLINK):
                if msg.get("IFLA_IFNAME") != self.interface:
                    continue
                went_down = (
                    msg["change"] != 0xFFFFFFFF  # not a link just created (created down)
                    and msg["change"] & IFF_UP
                    and not msg["flags"] & IFF_UP
                )
                if kind == _rtnl.RTM_DELLINK or went_down:
                    return True
        return False

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.poll + 1.0)
