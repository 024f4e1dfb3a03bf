"""Link state, counters, addresses and routes (rtnetlink), and listening sockets (sock_diag).

``Links(netns)`` keeps one rtnetlink and one sock_diag socket inside the
namespace for its lifetime (it is called every cycle for years), through the
small raw netlink client in ``rtnl.py`` (see there why not pyroute2). A
missing namespace is a ``SourceError(kind="missing")`` naming it, and is never
created.

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

from qbt_vpn_watchdog.sources import LinkState, Listener, Route, SourceError, rtnl
from qbt_vpn_watchdog.sources.netns import netns_ident

IFF_UP = 0x1
# Operational states that mean "cannot pass traffic". A WireGuard or TUN link
# that is up reports UNKNOWN (it has no carrier to speak of), so anything else
# counts as up.
_DOWN_OPERSTATES = frozenset({"DOWN", "LOWERLAYERDOWN", "NOTPRESENT"})
RTN_UNICAST, RTN_LOCAL = 1, 2
_NO_SUCH_LINK = frozenset({errno.ENODEV})


class Links:
    def __init__(self, netns: str | None, timeout: float = 5.0) -> None:
        self.netns = netns or None
        self._in = f" in namespace {self.netns}" if self.netns else ""
        self._nl = rtnl.NetlinkSocket(
            self.netns, rtnl.NETLINK_ROUTE, timeout=timeout, what="rtnetlink"
        )
        self._diag = rtnl.NetlinkSocket(
            self.netns, rtnl.NETLINK_SOCK_DIAG, timeout=timeout, what="sock_diag"
        )

    def _ask(
        self,
        nl: rtnl.NetlinkSocket,
        kind: int,
        flags: int,
        body: bytes,
        what: str,
        none_on: frozenset[int] = frozenset(),
    ) -> list[tuple[int, bytes]] | None:
        """The answer's messages; None when the kernel answers an errno in ``none_on``."""
        try:
            return nl.request(kind, flags, body, what)
        except rtnl.NetlinkError as e:
            if e.errno in none_on:
                return None
            raise SourceError(
                f"{what}{self._in}: {os.strerror(e.errno)}", kind="unreachable"
            ) from e

    def _link_msg(self, **key) -> dict | None:
        what = f"link {key.get('name') or key.get('index')}"
        msgs = self._ask(
            self._nl, rtnl.RTM_GETLINK, 0, rtnl.link_request(**key), what, _NO_SUCH_LINK
        )
        return rtnl.parse_link(msgs[0][1]) if msgs else None

    def link(self, name: str) -> LinkState | None:
        """The link called ``name``, or None when it does not exist."""
        msg = self._link_msg(name=name)
        if msg is None:
            return None
        dump = self._ask(
            self._nl, rtnl.RTM_GETADDR, rtnl.NLM_F_DUMP, rtnl.addr_request(), f"addresses of {name}"
        )
        addrs = []
        for kind, payload in dump:
            got = rtnl.parse_addr(payload) if kind == rtnl.RTM_NEWADDR else None
            if got is not None and got[0] == msg["index"]:
                addrs.append(got[1])
        return link_state(msg, addrs)

    def route_interface(self, dst: str) -> str | None:
        """The output interface of ``ip route get dst``, or None when dst is not routable.

        None for unreachable, blackhole and prohibit routes and for no route
        at all. ValueError when ``dst`` is not an IP address.
        """
        ip = ipaddress.ip_address(dst)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        msgs = self._ask(
            self._nl,
            rtnl.RTM_GETROUTE,
            0,
            rtnl.route_request(family, ip.packed),
            f"route to {ip}",
            rtnl.NO_ROUTE_ERRNOS,
        )
        if not msgs:
            return None
        rtype, oif = rtnl.parse_route(msgs[0][1])
        if rtype not in (RTN_UNICAST, RTN_LOCAL) or oif is None:
            return None
        link = self._link_msg(index=oif)  # None: deleted between the two requests
        return link["name"] if link else None

    def routes(self, family: int) -> tuple[Route, ...]:
        """Every unicast route of ``family`` (socket.AF_INET/AF_INET6) in every table.

        What `ip -6 route show table all` lists as plain routes: local,
        broadcast, multicast, unreachable, blackhole and prohibit routes carry
        nothing out of the namespace and are left out.
        """
        name = "IPv6" if family == socket.AF_INET6 else "IPv4"
        dump = self._ask(
            self._nl,
            rtnl.RTM_GETROUTE,
            rtnl.NLM_F_DUMP,
            rtnl.route_dump_request(family),
            f"{name} routes",
        )
        names: dict[int, str] = {}
        out = []
        for kind, payload in dump:
            if kind != rtnl.RTM_NEWROUTE:
                continue
            rtype, dst, oif, table = rtnl.parse_route_entry(payload)
            if rtype != RTN_UNICAST:
                continue
            if oif is not None and oif not in names:
                link = self._link_msg(index=oif)
                names[oif] = link["name"] if link else ""
            out.append(Route(dst, names.get(oif, "") if oif is not None else "", table))
        return tuple(out)

    def tcp_listeners(self, port: int) -> tuple[Listener, ...]:
        """The TCP sockets listening on ``port`` in the namespace (IPv4 and IPv6)."""
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            dump = self._ask(
                self._diag,
                rtnl.SOCK_DIAG_BY_FAMILY,
                rtnl.NLM_F_DUMP,
                rtnl.listeners_request(family),
                f"listening sockets on port {port}",
            )
            for _kind, payload in dump:
                got = rtnl.parse_diag(payload)
                if got is not None and got[1] == port:
                    out.append(Listener(*got))
        return tuple(out)

    def close(self) -> None:
        self._nl.close()
        self._diag.close()


def link_state(msg: dict, addresses: list[str]) -> LinkState:
    """Build a LinkState from a parsed RTM_NEWLINK and the link's addresses."""
    return LinkState(
        name=msg["name"],
        index=int(msg["index"]),
        up=bool(msg["flags"] & IFF_UP) and msg["operstate"] not in _DOWN_OPERSTATES,
        mtu=int(msg["mtu"]),
        addresses=tuple(addresses),
        rx_bytes=int(msg["rx_bytes"]),
        tx_bytes=int(msg["tx_bytes"]),
        rx_packets=int(msg["rx_packets"]),
        tx_packets=int(msg["tx_packets"]),
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

    The socket is (re)made inside the namespace; while the namespace does not
    exist the thread waits and tries again (never creating it), and when it is
    re-created under the same name, it follows.
    """

    GROUPS = rtnl.RTMGRP_LINK | rtnl.RTMGRP_IPV4_IFADDR | rtnl.RTMGRP_IPV6_IFADDR

    def __init__(self, netns: str | None, interface: str, poll: float = 1.0) -> None:
        self.netns = netns or None
        self.interface = interface
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_event: Callable[[], None] = lambda: None

    def start(self, on_event: Callable[[], None]) -> None:
        self._on_event = on_event
        self._thread = threading.Thread(
            target=self._run, name=f"link-events-{self.netns or 'root'}", daemon=True
        )
        self._thread.start()

    def _open(self) -> tuple[socket.socket, tuple[int, int] | None]:
        ident = netns_ident(self.netns)
        return rtnl.open_socket(self.netns, rtnl.NETLINK_ROUTE, self.GROUPS), ident

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
        for kind, _flags, _seq, payload in rtnl.messages(data):
            if kind == rtnl.RTM_DELADDR:
                got = rtnl.parse_addr(payload)
                # IPv6 link-local addresses come and go with every veth's carrier.
                if got is not None and not ipaddress.ip_interface(got[1]).is_link_local:
                    return True
            if kind in (rtnl.RTM_DELLINK, rtnl.RTM_NEWLINK):
                link = rtnl.parse_link(payload)
                if link["name"] != self.interface:
                    continue
                went_down = (
                    link["change"] != 0xFFFFFFFF  # not a link just created (created down)
                    and link["change"] & IFF_UP
                    and not link["flags"] & IFF_UP
                )
                if kind == rtnl.RTM_DELLINK or went_down:
                    return True
        return False

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.poll + 1.0)
