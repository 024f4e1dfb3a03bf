"""The kill switch, proven by behaviour: one refused packet per interface and family.

From inside the namespace, one UDP datagram is sent out of every interface
but lo and the tunnel (``SO_BINDTODEVICE``), once over IPv4 and once over
IPv6. A kill switch refuses it: a drop or reject in a netfilter output hook
(nftables or iptables, whatever the table's name or the rules' shape) comes
back to the sender as ``sendto`` failing with EPERM. A send that goes through
means nothing refused it: the same packet with a real destination would
have left that way.

Why the probe can never leave the host, even with the kill switch gone
(docs/checks.md says the same for operators):
  - its destination is the link's all-hosts group (224.0.0.1, ff02::1):
    link-local multicast, which no router forwards and no route carries
    beyond the link;
  - its TTL / hop limit is 0. The kernel drops a multicast packet with TTL 0
    after the output hook and before the device ("Multicasts with ttl 0 must
    not go beyond the host": ip_mc_output; for IPv6, ip6_finish_output2).
    That code path is taken because the host is always a member of the
    all-hosts group. For IPv6 the drop sits on the multicast-loop branch, so
    loop is on: the one copy is looped back into the namespace itself (to the
    discard port), never onto the wire.
tests/lab/test_killswitch_lab.py counts packets at the host's end of the
veth with the kill switch removed: none arrives (and one does at TTL 1, which
proves the counter would see it).
"""

from __future__ import annotations

import errno
import socket
import subprocess

from qbt_vpn_watchdog.sources import (
    NO_PATH,
    OPEN,
    REFUSED,
    KillSwitchReading,
    LeakProbe,
    SourceError,
)
from qbt_vpn_watchdog.sources.netns import entered, netns_path, socket_in

PROBE_V4 = ("224.0.0.1", 9)  # the all-hosts group; 9 is the discard port
PROBE_V6 = ("ff02::1", 9, 0, 0)
PAYLOAD = b"qbt-vpn-watchdog killswitch probe (TTL 0: never leaves the host)"

# A packet filter said no: netfilter's drop/reject in an output hook (EPERM),
# or an LSM / cgroup egress program (EPERM, EACCES).
_REFUSED = frozenset({errno.EPERM, errno.EACCES})
# The kernel has no way out there at all: the link is down, or has no address
# of that family (IPv6 off on it, or its link-local address still tentative).
_NO_PATH = frozenset({
    errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN,
    errno.ENODEV, errno.ENXIO,
})  # fmt: skip


def _name(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e.errno))


class KillSwitchProbe:
    """Sends the probes inside ``netns`` (None: the namespace the watchdog runs in)."""

    def __init__(self, netns: str | None, nft: str = "nft", timeout: float = 2.0) -> None:
        self.netns = netns
        self.nft = nft
        self.timeout = timeout

    def interfaces(self) -> tuple[str, ...]:
        """Every interface of the namespace, by name (if_nameindex, read inside it)."""
        try:
            with entered(self.netns):
                return tuple(name for _, name in socket.if_nameindex())
        except OSError as e:
            raise SourceError(
                f"cannot list the namespace's interfaces: {e.strerror or e}", kind="local"
            ) from None

    def probe(self, skip: tuple[str, ...]) -> KillSwitchReading:
        """One IPv4 and one IPv6 probe out of every interface but lo and ``skip``.

        When one got out, the namespace's netfilter tables are listed too, so
        the check can tell a missing kill switch from one that lets packets out.
        """
        probes = tuple(
            self._one(ifname, family)
            for ifname in self.interfaces()
            if ifname != "lo" and ifname not in skip
            for family in ("ipv4", "ipv6")
        )
        tables = self.tables() if any(p.verdict == OPEN for p in probes) else None
        return KillSwitchReading(probes, tables)

    def _one(self, ifname: str, family: str) -> LeakProbe:
        v4 = family == "ipv4"
        try:
            s = socket_in(self.netns, socket.AF_INET if v4 else socket.AF_INET6, socket.SOCK_DGRAM)
        except OSError as e:
            raise SourceError(
                f"cannot open a probe socket: {e.strerror or e}", kind="local"
            ) from None
        try:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
                if v4:
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
                else:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 0)
                    # On: the kernel's hop-limit-0 drop is on the looped path.
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
            except OSError as e:
                if e.errno == errno.ENODEV:  # the interface went away meanwhile
                    return LeakProbe(ifname, family, NO_PATH, "ENODEV")
                raise SourceError(
                    f"cannot prepare the probe out of {ifname}: {e.strerror or e}", kind="local"
                ) from None
            try:
                s.sendto(PAYLOAD, PROBE_V4 if v4 else PROBE_V6)
            except OSError as e:
                if e.errno in _REFUSED:
                    return LeakProbe(ifname, family, REFUSED, _name(e))
                if e.errno in _NO_PATH:
                    return LeakProbe(ifname, family, NO_PATH, _name(e))
                raise SourceError(
                    f"the probe out of {ifname} ({family}) failed: {e.strerror or e}", kind="local"
                ) from None
            return LeakProbe(ifname, family, OPEN)
        finally:
            s.close()

    def tables(self) -> tuple[str, ...] | None:
        """The namespace's netfilter tables ("inet vpn_killswitch"); None when unreadable.

        Only asked when a probe got out (a fork of nft, about 10 ms): it names
        the fault, the probes alone decide whether there is one.
        """
        argv = [self.nft, "list", "tables"]
        if self.netns:
            argv = ["nsenter", f"--net={netns_path(self.netns)}", *argv]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if p.returncode != 0:
            return None
        return tuple(
            line.removeprefix("table ").strip()
            for line in p.stdout.splitlines()
            if line.startswith("table ")
        )
