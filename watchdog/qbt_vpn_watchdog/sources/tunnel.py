"""Which peer, which addresses and which sockets are the tunnel's.

Facts about the sources' own dataclasses that more than one reader needs: the
checks (handshake, return_path, bind, webui) and the remediation actions
(tier-1 restart, rebind). They live here, beside the dataclasses, so that
nothing in sources/ or actions.py imports a check.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from qbt_vpn_watchdog.sources import LinkState, Listener, WgDevice, WgPeer

# The tunnel's peer: the one routing everything (AirVPN's AllowedIPs = 0.0.0.0/0).
_DEFAULT_ROUTES = {"0.0.0.0/0", "::/0"}

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def tunnel_peer(device: WgDevice) -> WgPeer | None:
    """The peer that carries the default route, else the first peer, else None."""
    for peer in device.peers:
        if _DEFAULT_ROUTES & set(peer.allowed_ips):
            return peer
    return device.peers[0] if device.peers else None


def ip_of(text: str) -> IpAddress | None:
    """The address in "10.0.0.2/32", "fe80::1%wg0" or "10.0.0.2"; None when it is not one."""
    try:
        return ipaddress.ip_address(text.split("/", 1)[0].split("%", 1)[0])
    except ValueError:
        return None


def routable(addresses: Iterable[str]) -> set[IpAddress]:
    """The addresses that can carry traffic: IPv6 link-local ones (veths have them) left out."""
    out = set()
    for a in addresses:
        ip = ip_of(a)
        if ip is not None and not ip.is_link_local:
            out.add(ip)
    return out


def on_tunnel(listeners: Iterable[Listener], link: LinkState) -> bool:
    """Some socket in ``listeners`` is on ``link`` as it is now: bound to its index,
    or to none but on one of its addresses. Link-local sockets do not count: a TUN
    device gets an fe80:: address of its own, and a socket there carries no torrent."""
    addrs = routable(link.addresses)
    for x in listeners:
        ip = ip_of(x.address)
        if ip is not None and ip.is_link_local:
            continue
        if x.ifindex == link.index or (x.ifindex == 0 and ip in addrs):
            return True
    return False
