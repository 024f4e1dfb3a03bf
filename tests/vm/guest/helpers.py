"""What the guest tests share: a WireGuard pair with the VPN's resolver, and its config."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import dns.message
import dns.rrset
from pyroute2 import netns as pr_netns

from tests.support.wg_pair import WgPair


class DnsResponder:
    """The VPN's resolver at the server's tunnel address: answers every A query with 10.99.1.1."""

    def __init__(self, ns: str, address: str) -> None:
        self.sock = pr_netns.create_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, flags=0)
        self.sock.bind((address, 53))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "10.99.1.1"))
            self.sock.sendto(r.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def vpn_pair(prefix: str, kernel: bool = True, echoes: int = 2) -> Iterator[WgPair]:
    """A WgPair (tests/support/wg_pair.py) up, the VPN's resolver on b's tunnel address, and
    ``echoes`` datagrams echoed through the tunnel (the handshake done); all gone on exit.

    The echo timeout is generous: the first handshake under TCG can take seconds.
    """
    pair = WgPair(prefix, kernel=kernel).up()
    try:
        resolver = DnsResponder(pair.ns_b, pair.tun_b)
        try:
            pair.echo(echoes, timeout=10)
            yield pair
        finally:
            resolver.close()
    finally:
        pair.down()


def watchdog_config(pair: WgPair, reader: str, before: str = "", after: str = "") -> str:
    """The watchdog's TOML config for namespace a of ``pair``, read with ``reader``
    ("kernel" or "uapi"); ``before`` and ``after`` are whole tables to add.

    Timeouts are generous: the first call of a reader under TCG can take seconds.
    """
    return f"""{before}
[namespace]
name = "{pair.ns_a}"
[wireguard]
interface = "{pair.wg_a}"
reader = "{reader}"
[checks.handshake]
timeout = 30.0
[checks.return_path]
timeout = 30.0
[checks.dns]
resolver = "{pair.tun_b}"
names = ["probe.test"]
timeout = 30.0
# The pair's namespaces have no kill switch and no forwarded port.
[checks.killswitch]
enabled = false
[checks.port_forward]
enabled = false
{after}"""
