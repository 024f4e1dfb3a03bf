"""Path MTU through the tunnel: do full-size packets cross it, both ways?

A path-MTU black hole on a VPN link drops outer WireGuard packets above some
size and says nothing (no ICMP "fragmentation needed", or nobody listens to
it). Handshakes (148 and 92 bytes), keepalives (32), DNS, pings and small HTTP
still pass, so every other check stays ok, while every full-size TCP segment
of a download is lost: nothing downloads. AirVPN's generated config sets
MTU 1320 for this reason; a tunnel configured larger than its path is the
classic cause.

The measurement, from inside the namespace, to the VPN's gateway (by default
the VPN's resolver, which on AirVPN is the gateway):

1. At once: an ICMP echo of exactly the tunnel's MTU (IP total length) and
   a small one, both with DF set (``IP_PMTUDISC_PROBE``: DF on, and the
   kernel's cached path MTU ignored, so we test the path, not the cache). The
   echo reply is as large as the request, so one full-size echo proves both
   directions: the far side is made to send a full-size packet back.
   A full-size reply -> ok, done: two packets each way per cycle. Without
   one, a second full-size echo is sent before anything is concluded.
2. No reply at all, small or large, within the wait -> ``answered=False``:
   the far end does not answer this probe (ICMP filtered, or the whole tunnel
   is down, which return_path reports). That says nothing about size and is
   never called a black hole.
3. The small echo answered, both full-size ones not -> large packets are lost.
   Then: which direction (a full-size echo request sent up in small IP
   fragments, which the far end reassembles and answers with one full-size
   reply: answered = the way down carries full size, so the loss is on the
   way up), and how large a packet still crosses (rounds of echoes of several sizes at once, each round narrowing
   the bracket between the largest answered and the smallest lost size).

Patience scales with the small echo's round trip (a saturated tunnel queues
seconds of data in front of our probes): a reply counts whenever it comes
within the wait, and a full-size echo is called lost only after waiting
several times as long as the small one took.

Needs CAP_NET_RAW (raw ICMP socket). IPv4 only.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable

from qbt_vpn_watchdog.sources import PathMtu, SourceError
from qbt_vpn_watchdog.sources.netns import socket_in

# <linux/in.h>; Python's socket module does not export these.
IP_MTU_DISCOVER = 10
IP_PMTUDISC_PROBE = 3  # set DF, ignore the route's cached path MTU

ICMP_ECHO_REPLY, ICMP_ECHO = 0, 8
IP_HEADER = 20
ICMP_HEADER = 8
SMALL = 84  # a default `ping`: 56 bytes of data
MIN_SIZE = 68  # the smallest MTU every IPv4 link must carry (RFC 791)
FRAGMENT = 512  # bytes of ICMP per fragment of the fragmented echo (a multiple of 8)

FIRST_WAIT = 1.0  # seconds for the first replies when nothing is known of the round trip
MAX_WAIT = 3.0  # the longest we wait for any one round (a saturated tunnel)
PATIENCE = 4.0  # a lost full-size echo: waited this many times the small echo's round trip


class _Echoes:
    """The echoes of one measurement on one raw socket: every reply counts, late ones too."""

    def __init__(self, probe: PathMtuProbe, sock: socket.socket, target: str) -> None:
        self.probe, self.sock, self.target = probe, sock, target
        self.ident = int.from_bytes(os.urandom(2), "big")
        self.sent: dict[int, tuple[int, float]] = {}  # seq -> (size, sent at)
        self.got: dict[int, float] = {}  # size -> fastest round trip, seconds
        self.sent_count = 0

    def send(self, sizes: list[int]) -> None:
        for size in sizes:
            seq = self.probe._next_seq()
            try:
                self.sock.sendto(echo_request(self.ident, seq, size), (self.target, 0))
            except OSError as e:
                if e.errno == errno.EMSGSIZE:
                    continue  # larger than the interface's MTU: that size cannot be sent at all
                raise SourceError(
                    f"cannot send an echo to {self.target}: {e.strerror or e}", kind="unreachable"
                ) from None
            self.sent[seq] = (size, time.monotonic())
            self.sent_count += 1

    def wait(self, seconds: float, enough: Callable[[], bool]) -> None:
        """Read replies for up to ``seconds``, or until ``enough()`` (or all are back)."""
        deadline = time.monotonic() + seconds
        while not enough() and len(self.got) < len({s for s, _ in self.sent.values()}):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return
            try:
                packet = self.sock.recv(65535)
            except BlockingIOError:
                continue
            r = parse_reply(packet)
            if r is None or r[0] != self.target or r[1] != self.ident or r[2] not in self.sent:
                continue  # another ping in the namespace
            size, at = self.sent[r[2]]
            if r[3] == size:
                rtt = time.monotonic() - at
                self.got[size] = min(rtt, self.got.get(size, rtt))

    def rtt(self) -> float | None:
        return min(self.got.values(), default=None)


# --- the search (pure) -----------------------------------------------------------------


def narrow(
    send_round: Callable[[list[int]], set[int]], lo: int, hi: int, width: int = 12, rounds: int = 3
) -> int:
    """The largest size that passes, given ``lo`` passes and ``hi`` does not.

    Each round sends up to ``width`` sizes spread over (lo, hi) at once and
    keeps the bracket between the largest answered one and the smallest lost
    one above it. Three rounds of 12 take a 1,250-byte range to the byte. A
    lost probe only makes the answer smaller (conservative: a smaller MTU is
    safe); a size answered above a lost one moves ``lo`` past it.
    """
    for _ in range(rounds):
        if hi - lo <= 1:
            break
        step = max(1, (hi - lo) // (width + 1))
        sizes = list(range(lo + step, hi, step))[:width]
        if not sizes:
            break
        answered = send_round(sizes)
        passing = [s for s in sizes if s in answered]
        new_lo = max(passing, default=lo)
        lost_above = [s for s in sizes if s > new_lo and s not in answered]
        lo, hi = new_lo, min(lost_above, default=hi)
    return lo


# --- ICMP echo on a raw socket ---------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def echo_request(ident: int, seq: int, size: int) -> bytes:
    """An ICMP echo request whose IP packet is ``size`` bytes (20 bytes of IP header)."""
    payload = bytes((seq + i) & 0xFF for i in range(max(0, size - IP_HEADER - ICMP_HEADER)))
    head = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
    csum = _checksum(head + payload)
    return struct.pack("!BBHHH", ICMP_ECHO, 0, csum, ident, seq) + payload


def parse_reply(packet: bytes) -> tuple[str, int, int, int] | None:
    """(source, ident, seq, IP total length) of an echo reply read from a raw socket."""
    if len(packet) < IP_HEADER + ICMP_HEADER or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + ICMP_HEADER:
        return None
    kind, _code, _csum, ident, seq = struct.unpack_from("!BBHHH", packet, ihl)
    if kind != ICMP_ECHO_REPLY:
        return None
    (total,) = struct.unpack_from("!H", packet, 2)
    return socket.inet_ntoa(packet[12:16]), ident, seq, total


class PathMtuProbe:
    """Measures the path MTU through the tunnel from inside ``netns`` (None: here)."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._seq = 0

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def _socket(self) -> socket.socket:
        try:
            s = socket_in(self.netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        except PermissionError:
            raise SourceError(
                "cannot open a raw ICMP socket (needs CAP_NET_RAW)", kind="permission"
            ) from None
        s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        s.setblocking(False)
        return s

    def echo(self, target: str, sizes: Iterable[int], wait: float) -> dict[int, float]:
        """Send one echo per size at once; {size: round trip seconds} of those answered."""
        sock = self._socket()
        try:
            echoes = _Echoes(self, sock, target)
            echoes.send(list(sizes))
            echoes.wait(wait, lambda: False)
            return dict(echoes.got)
        finally:
            sock.close()

    def fragmented_echo(self, target: str, size: int, wait: float, ident: int) -> bool:
        """An echo of ``size`` bytes sent up in small fragments; True when its reply came back.

        The far end reassembles the request and answers it with one packet of
        ``size`` bytes: the way down alone is tested at full size, while only
        small packets went up.
        """
        seq = self._next_seq()
        icmp = echo_request(ident, seq, size)
        try:
            out = socket_in(self.netns, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except PermissionError:
            raise SourceError(
                "cannot open a raw IP socket (needs CAP_NET_RAW)", kind="permission"
            ) from None
        sock = self._socket()
        try:
            packet_id = int.from_bytes(os.urandom(2), "big") or 1
            dst = socket.inet_aton(target)
            for off in range(0, len(icmp), FRAGMENT):
                part = icmp[off : off + FRAGMENT]
                more = off + FRAGMENT < len(icmp)
                flags = (0x2000 if more else 0) | (off // 8)
                # Version/IHL, TOS, total length (the kernel fills it in), id, flags and
                # offset, TTL, protocol, checksum (filled in), source (filled in), dest.
                head = struct.pack(
                    "!BBHHHBBH4s4s", 0x45, 0, 0, packet_id, flags, 64, socket.IPPROTO_ICMP, 0,
                    bytes(4), dst,
                )  # fmt: skip
                try:
                    out.sendto(head + part, (target, 0))
                except OSError as e:
                    raise SourceError(
                        f"cannot send a fragment to {target}: {e.strerror or e}", kind="unreachable"
                    ) from None
            sent_at = time.monotonic()
            deadline = sent_at + wait
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                try:
                    r = parse_reply(sock.recv(65535))
                except BlockingIOError:
                    continue
                if r is not None and r[:3] == (target, ident, seq) and r[3] == size:
                    return True
            return False
        finally:
            out.close()
            sock.close()

    def measure(
        self, target: str, mtu: int, budget: float = 8.0, thorough: bool = True
    ) -> PathMtu:
        """Full size both ways to ``target``? If not, which way, and how large does cross.

        Within ``budget`` seconds: a search cut short by it reports the largest
        size answered so far (smaller than the truth, never larger). Not
        ``thorough``: stop once full size is seen lost twice (a first look,
        to be confirmed; ``largest`` and the way are then unknown).
        """
        end = time.monotonic() + budget

        def left(wait: float) -> float:
            return max(0.0, min(wait, end - time.monotonic()))

        mtu = max(MIN_SIZE, mtu)
        small = min(SMALL, mtu)
        sock = self._socket()
        try:
            e = _Echoes(self, sock, target)

            def full() -> bool:  # a full-size reply, whenever it came: no black hole
                return mtu in e.got

            def passed() -> PathMtu:
                return PathMtu(target, mtu, True, True, mtu, None, e.rtt(), e.sent_count)

            # A full-size echo and a small one; done as soon as the full one is back.
            e.send([mtu, small] if small < mtu else [mtu])
            e.wait(left(FIRST_WAIT), full)
            if not full():
                # A second full-size echo, with patience set by the small one's round trip
                # (or the longest wait when even the small one has not come back yet).
                wait = MAX_WAIT
                if small in e.got:
                    wait = min(MAX_WAIT, max(FIRST_WAIT, PATIENCE * e.got[small]))
                e.send([mtu] if small in e.got else [mtu, small])
                e.wait(left(wait), full)
            if full():
                return passed()
            if not e.got:
                return PathMtu(target, mtu, False, False, None, None, None, e.sent_count)
            if not thorough:
                return PathMtu(target, mtu, True, False, None, None, e.rtt(), e.sent_count)

            # Small passes, full size does not: which way, and how large crosses.
            # Replies to any earlier echo still count when they come late.
            wait = min(MAX_WAIT, max(FIRST_WAIT / 2, PATIENCE * (e.rtt() or 0.0)))
            down = self.fragmented_echo(target, mtu, left(wait), e.ident)
            e.sent_count += 1

            def send_round(sizes: list[int]) -> set[int]:
                if end - time.monotonic() <= 0 or full():
                    return set(e.got)
                e.send(sizes)
                e.wait(left(wait), full)
                return set(e.got)

            largest = narrow(send_round, small, mtu)
            if not full():
                # The last word: a black hole loses every full-size packet, while
                # loss in a busy queue lets some through. Two more, all the patience left.
                e.send([mtu, mtu])
                e.wait(left(MAX_WAIT), full)
            if full():
                return passed()
            return PathMtu(target, mtu, True, False, largest, down, e.rtt(), e.sent_count)
        finally:
            sock.close()
