"""What the guest tests share: the VPN's resolver on the server side of a pair."""

from __future__ import annotations

import socket
import threading

import dns.message
import dns.rrset
from pyroute2 import netns as pr_netns


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
