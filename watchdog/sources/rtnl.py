"""A small raw netlink client: rtnetlink (links, addresses, routes), sock_diag, events.

Why not pyroute2 for this: its 0.9 synchronous API runs every request through
an asyncio loop and parses messages attribute by attribute in Python; one
link read (RTM_GETLINK + an address dump) cost 1.15 ms of CPU, a route lookup
0.8 ms. The same requests on a plain socket cost 0.03 ms, and they run every
cycle for years. What is read here is a handful of fixed structs from
<linux/rtnetlink.h>, <linux/if_link.h>, <linux/if_addr.h> and
<linux/inet_diag.h>. pyroute2 stays for WireGuard's generic netlink, whose
attribute tree is what that library is good at. Re-measured for moving this to
pyroute2 too (``python -m tests.bench.netlink``; the decision and its numbers
are in docs/vm-tests.md): 8-20x the CPU per request, +2.5 MiB on the kernel
path and +5.8 MiB on the UAPI path. This client is tested on the kernel's
WireGuard in tests/vm.

A ``NetlinkSocket`` is a plain Python socket, created inside the namespace
(``netns.entered``, never creating one) and then usable from any thread: one
request at a time under a lock, with a timeout. A socket pins the namespace it
was made in, so each request first checks that ``/run/netns/NAME`` is still the
same namespace (a restarted VPN service re-creates it) and reopens if not.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from collections.abc import Iterator

from qbt_vpn_watchdog.sources import SourceError
from qbt_vpn_watchdog.sources.netns import entered, netns_ident

NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4

# nlmsghdr
_HDR = struct.Struct("=LHHLL")  # length, type, flags, sequence, port id
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_DUMP = 0x1, 0x2, 0x300

# rtnetlink message types and multicast groups
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100

_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFLA_IFNAME, IFLA_MTU, IFLA_STATS, IFLA_OPERSTATE, IFLA_STATS64 = 3, 4, 7, 16, 23
# RFC 2863 operational states (IF_OPER_*), as `ip link` names them.
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

_IFADDR = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
IFA_ADDRESS, IFA_LOCAL = 1, 2

# family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
RTA_DST, RTA_OIF = 1, 4

# sock_diag: inet_diag_req_v2 and inet_diag_msg
SOCK_DIAG_BY_FAMILY = 20
TCP_LISTEN = 10
_DIAG_REQ = struct.Struct("=BBBxI48x")  # family, protocol, ext, states, (an empty sockid)
_DIAG_MSG_LEN = 72


class NetlinkError(OSError):
    """The kernel answered a request with an error (``errno`` is set)."""


def attributes(data: bytes, offset: int) -> dict[int, bytes]:
    """The rtattr/nlattr list from ``offset`` on: type -> payload (the last one wins)."""
    out = {}
    end = len(data)
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return out


def attribute(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, sequence, payload) of each message in one datagram."""
    offset = 0
    while offset + _HDR.size <= len(data):
        length, kind, flags, seq, _pid = _HDR.unpack_from(data, offset)
        if length < _HDR.size:
            break
        yield kind, flags, seq, data[offset + _HDR.size : offset + length]
        offset += (length + 3) & ~3


def open_socket(netns: str | None, protocol: int, groups: int = 0) -> socket.socket:
    """A raw netlink socket created inside ``netns`` (never creating it), bound to ``groups``."""
    with entered(netns):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
    try:
        s.bind((0, groups))
    except OSError:
        s.close()
        raise
    return s


class NetlinkSocket:
    def __init__(
        self, netns: str | None, protocol: int, *, timeout: float = 5.0, what: str = "netlink"
    ) -> None:
        self.netns = netns or None
        self.protocol = protocol
        self.timeout = timeout
        self.what = what
        self._in = f" in namespace {self.netns}" if self.netns else ""
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._ident: tuple[int, int] | None = None
        self._seq = 0
        self.opened = 0  # sockets opened so far (tests check it stays at 1)

    def _open(self, ident: tuple[int, int] | None) -> socket.socket:
        try:
            s = open_socket(self.netns, self.protocol)
            s.settimeout(self.timeout)
        except OSError as e:
            raise SourceError(
                f"{self.what} socket{self._in}: {e.strerror or e}", kind="unreachable"
            ) from None
        self._sock, self._ident = s, ident
        self.opened += 1
        return s

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    def request(self, kind: int, flags: int, body: bytes, what: str) -> list[tuple[int, bytes]]:
        """Send one request and return (type, payload) of its answer messages.

        Raises NetlinkError for an error answer, SourceError when the namespace
        is gone ("missing"), no answer comes ("timeout") or the socket fails.
        """
        ident = netns_ident(self.netns)
        with self._lock:
            s = self._sock
            if s is None or ident != self._ident:
                self._drop()
                s = self._open(ident)
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            seq = self._seq
            msg = _HDR.pack(_HDR.size + len(body), kind, flags | NLM_F_REQUEST, seq, 0) + body
            try:
                s.send(msg)
                return self._answer(s, seq, flags & NLM_F_DUMP == NLM_F_DUMP)
            except TimeoutError:
                self._drop()  # a late answer must not be read as the next one's
                raise SourceError(
                    f"{what}{self._in}: no answer from netlink within {self.timeout:g} s",
                    kind="timeout",
                ) from None
            except NetlinkError:
                raise
            except OSError as e:
                self._drop()
                raise SourceError(
                    f"{what}{self._in}: {e.strerror or e}", kind="unreachable"
                ) from None

    def _answer(self, s: socket.socket, seq: int, dump: bool) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        while True:
            data = s.recv(1 << 16)
            for kind, flags, got_seq, payload in messages(data):
                if got_seq != seq:
                    continue  # a multicast or a stale answer
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload, 0)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return out  # an ACK
                out.append((kind, payload))
                if not dump and not flags & NLM_F_MULTI:
                    return out

    def close(self) -> None:
        with self._lock:
            self._drop()


# --- rtnetlink ---------------------------------------------------------------------


def link_request(*, name: str | None = None, index: int = 0) -> bytes:
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0)
    if name is not None:
        body += attribute(IFLA_IFNAME, name.encode() + b"\0")
    return body


def parse_link(payload: bytes) -> dict:
    """An RTM_NEWLINK payload: index, flags, name, mtu, operstate, counters."""
    _family, _type, index, flags, change = _IFINFO.unpack_from(payload, 0)
    a = attributes(payload, _IFINFO.size)
    counters = (0, 0, 0, 0)
    if IFLA_STATS64 in a and len(a[IFLA_STATS64]) >= 32:
        counters = struct.unpack_from("=QQQQ", a[IFLA_STATS64], 0)
    elif IFLA_STATS in a and len(a[IFLA_STATS]) >= 16:
        counters = struct.unpack_from("=IIII", a[IFLA_STATS], 0)
    rx_packets, tx_packets, rx_bytes, tx_bytes = counters
    oper = a[IFLA_OPERSTATE][0] if a.get(IFLA_OPERSTATE) else 0
    return {
        "index": index,
        "flags": flags,
        "change": change,  # in a notification: the flags that changed (~0: a new link)
        "name": a.get(IFLA_IFNAME, b"").split(b"\0", 1)[0].decode(errors="replace"),
        "mtu": struct.unpack_from("=I", a[IFLA_MTU], 0)[0] if IFLA_MTU in a else 0,
        "operstate": OPERSTATES[oper] if oper < len(OPERSTATES) else "UNKNOWN",
        "rx_bytes": rx_bytes,
        "tx_bytes": tx_bytes,
        "rx_packets": rx_packets,
        "tx_packets": tx_packets,
    }


def addr_request() -> bytes:
    return _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)


def parse_addr(payload: bytes) -> tuple[int, str] | None:
    """(interface index, "address/prefix") of an RTM_NEWADDR payload."""
    family, prefixlen, _flags, _scope, index = _IFADDR.unpack_from(payload, 0)
    a = attributes(payload, _IFADDR.size)
    raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
    if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return index, f"{socket.inet_ntop(family, raw)}/{prefixlen}"


def route_request(family: int, packed: bytes) -> bytes:
    return _RTMSG.pack(family, len(packed) * 8, 0, 0, 0, 0, 0, 0, 0) + attribute(RTA_DST, packed)


def route_dump_request(family: int) -> bytes:
    """Every route of ``family`` in every table (with NLM_F_DUMP)."""
    return _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)


RTA_TABLE = 15


def parse_route_entry(payload: bytes) -> tuple[int, str, int | None, int]:
    """(route type, "destination/length", output interface index or None, table) of a route."""
    family, dst_len, _src_len, _tos, table, _proto, _scope, rtype, _flags = _RTMSG.unpack_from(
        payload, 0
    )
    a = attributes(payload, _RTMSG.size)
    if RTA_DST in a:
        dst = socket.inet_ntop(family, a[RTA_DST])
    else:
        dst = "::" if family == socket.AF_INET6 else "0.0.0.0"
    oif = struct.unpack_from("=I", a[RTA_OIF], 0)[0] if RTA_OIF in a else None
    if RTA_TABLE in a:
        table = struct.unpack_from("=I", a[RTA_TABLE], 0)[0]
    return rtype, f"{dst}/{dst_len}", oif, table


def parse_route(payload: bytes) -> tuple[int, int | None]:
    """(route type, output interface index or None) of an RTM_NEWROUTE payload."""
    fields = _RTMSG.unpack_from(payload, 0)
    a = attributes(payload, _RTMSG.size)
    oif = struct.unpack_from("=I", a[RTA_OIF], 0)[0] if RTA_OIF in a else None
    return fields[7], oif


# --- sock_diag ---------------------------------------------------------------------


def listeners_request(family: int) -> bytes:
    return _DIAG_REQ.pack(family, socket.IPPROTO_TCP, 0, 1 << TCP_LISTEN)


def parse_diag(payload: bytes) -> tuple[str, int, int] | None:
    """(address, port, bound interface index) of an inet_diag_msg."""
    if len(payload) < _DIAG_MSG_LEN:
        return None
    family = payload[0]
    (port,) = struct.unpack_from(">H", payload, 4)
    if family == socket.AF_INET:
        address = socket.inet_ntop(family, payload[8:12])
    elif family == socket.AF_INET6:
        address = socket.inet_ntop(family, payload[8:24])
    else:
        return None
    (ifindex,) = struct.unpack_from("=I", payload, 40)
    return address, port, ifindex


# Errors of `ip route get` that mean "no route", not "netlink broke".
NO_ROUTE_ERRNOS = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EINVAL, errno.EPERM}
)
