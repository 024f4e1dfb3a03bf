"""One DNS query through a given resolver, from inside the namespace.

The UDP socket is created inside the namespace (``socket_in``) and handed to
dnspython, so the query leaves by the namespace's routes, and only to the
server asked: never through the host's /etc/resolv.conf. No subprocess.

Bounded like every network read: dnspython's ``Resolver`` (whose ``lifetime``
covers its retries over several servers) is not used; ``dns.query`` gets one
absolute expiration for the sends, the wait and the retransmission, so the
query ends by its timeout whatever arrives. It is UDP only (no TCP fallback
on truncation): a reply is one datagram, at most 64 KiB, and a stray or junk
datagram ends the query at once (``ignore_errors`` is off) instead of being
waited past, so a flood of them cannot stretch it either.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import TYPE_CHECKING

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from qbt_vpn_watchdog.sources import DnsAnswer, SourceError
from qbt_vpn_watchdog.sources.netns import resolv_conf_nameserver, socket_in

if TYPE_CHECKING:
    from qbt_vpn_watchdog.config import Config
    from qbt_vpn_watchdog.sources import DnsClient


def vpn_resolver(config: Config, dns: DnsClient) -> str | None:
    """The VPN's resolver: ``checks.dns.resolver``, else the namespace's resolv.conf.

    The one rule for it (the checks and the HTTP adapter both ask here). Inside
    a namespace Python would still read the host's /etc/resolv.conf (a DNS
    leak), so the nameserver is always passed explicitly.
    """
    return config.checks.dns.resolver or dns.nameserver()


class Resolver:
    """Queries a DNS server from inside ``netns`` (None: the current namespace)."""

    def __init__(self, netns: str | None, port: int = 53, etc: str = "/etc") -> None:
        self.netns = netns
        self.port = port  # tests point it at a server on another port
        self._etc = etc

    def nameserver(self) -> str | None:
        """The namespace's own resolver (first nameserver of its resolv.conf), if any."""
        return resolv_conf_nameserver(self.netns, self._etc)

    def query(
        self,
        name: str,
        server: str,
        timeout: float,
        rdtype: str = "A",
        retransmit_after: float | None = None,
    ) -> DnsAnswer:
        """Ask ``server`` for ``name``; addresses are the answer's A (or ``rdtype``) records.

        With ``retransmit_after`` (seconds, less than ``timeout``) the same
        query is sent once more on the same socket when no answer has come by
        then, and an answer to either counts: behind a saturated tunnel the
        first query may have been dropped from a full queue, or its answer is
        merely late. ``latency`` is always measured from the first send.

        Raises ``SourceError`` with kind ``timeout`` (no answer in time),
        ``bad_response`` (junk, a reply to another question, a reply from
        another address) or ``unreachable`` (the socket could not send).
        A SERVFAIL or NXDOMAIN is an answer, not an error: see ``rcode``.
        """
        try:
            family = (
                socket.AF_INET6
                if ipaddress.ip_address(server.split("%")[0]).version == 6
                else socket.AF_INET
            )
        except ValueError:
            raise SourceError(
                f"DNS server {server!r} is not an IP address", kind="bad_response"
            ) from None
        try:
            q = dns.message.make_query(name, rdtype)
        except dns.exception.DNSException as e:
            raise SourceError(f"cannot ask for {name!r}: {e}", kind="bad_response") from None
        sock = socket_in(self.netns, family, socket.SOCK_DGRAM)
        retransmitted = False
        try:
            sock.setblocking(False)  # dnspython requires it for a caller's socket
            dest = (server, self.port)
            wire = q.to_wire()
            t0 = time.monotonic()
            # dnspython's expirations are absolute time.time() values.
            end = time.time() + timeout
            try:
                dns.query.send_udp(sock, wire, dest, end)
                r = None
                if retransmit_after is not None and 0 < retransmit_after < timeout:
                    try:
                        r = self._receive(sock, dest, q, time.time() + retransmit_after)
                    except dns.exception.Timeout:
                        dns.query.send_udp(sock, wire, dest, end)
                        retransmitted = True
                if r is None:
                    r = self._receive(sock, dest, q, end)
            except dns.exception.Timeout:
                again = " (sent twice)" if retransmitted else ""
                raise SourceError(
                    f"no answer from {server} for {name} within {timeout:g} s{again}",
                    kind="timeout",
                ) from None
            except dns.query.UnexpectedSource as e:
                raise SourceError(
                    f"reply for {name} came from an unexpected address: {e}", kind="bad_response"
                ) from None
            except dns.query.BadResponse:
                raise SourceError(
                    f"{server} answered another question than {name}", kind="bad_response"
                ) from None
            except dns.exception.DNSException as e:
                raise SourceError(
                    f"malformed answer from {server} for {name}: {e}", kind="bad_response"
                ) from None
            except OSError as e:
                raise SourceError(
                    f"cannot query {server} for {name}: {e.strerror or e}", kind="unreachable"
                ) from None
            latency = time.monotonic() - t0
        finally:
            sock.close()
        want = dns.rdatatype.from_text(rdtype)
        addresses = tuple(
            rd.to_text() for rrset in r.answer if rrset.rdtype == want for rd in rrset
        )
        return DnsAnswer(
            name, server, dns.rcode.to_text(r.rcode()), addresses, latency, retransmitted
        )

    @staticmethod
    def _receive(sock: socket.socket, dest: tuple, q: dns.message.Message, expiration: float):
        # ignore_errors=False: a malformed reply or a reply to another
        # question is reported, not silently waited past (as dns.query.udp).
        r, _ = dns.query.receive_udp(sock, dest, expiration, query=q)
        if not q.is_response(r):
            raise dns.query.BadResponse
        return r
