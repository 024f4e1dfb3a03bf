"""ipv6: no IPv6 route leaves the namespace except through the tunnel.

IPv6 is blocked inside the namespace by design (docs/nixos.md says why): the
bring-up script disables it on every link there and the kill switch drops it.
What undoes that without anyone deciding so is IPv6 coming back on the LAN
side (a host update, someone's sysctl) and a router advertisement giving the
namespace an address and a default route beside the tunnel. This check reads
the namespace's IPv6 routing table (every table, one rtnetlink dump, no
packet sent) and fails when a unicast route leaves by an interface other than
the tunnel. Routes on lo and link-local ones (fe80::/10 never leaves the
link) are left aside. A route through the tunnel passes: that is the tunnel
carrying IPv6, not a leak.

Reasons:
  route_outside  an IPv6 route leaves by an interface that is not the tunnel
  unreadable     the routing table could not be read (the namespace is gone?)
"""

from __future__ import annotations

import ipaddress
import socket

from qbt_vpn_watchdog.checks import Context, register, unknown, unsafe
from qbt_vpn_watchdog.results import Outcome
from qbt_vpn_watchdog.sources import Route, SourceError

_SHOWN = 5  # routes named in the detail; the count says how many there are


def outside_tunnel(routes: tuple[Route, ...], tunnel: str) -> list[Route]:
    """The routes that carry IPv6 out of the namespace by another way than the tunnel."""
    return [
        r
        for r in routes
        if r.interface not in (tunnel, "lo")
        and not ipaddress.ip_network(r.destination, strict=False).is_link_local
    ]


@register(
    "ipv6",
    order=70,
    summary="no IPv6 route leaves the namespace except through the tunnel",
    reasons=(
        # A path out beside the tunnel. The kill switch still drops IPv6, but
        # nothing here proves it: hold the torrents. The tunnel's restart is the
        # remedy: the bring-up script's tunnel-up turns IPv6 off again, which
        # takes the routes with it.
        unsafe("route_outside", restart=True),
        unknown("unreadable"),
    ),
)
def check(ctx: Context) -> Outcome:
    tunnel = ctx.config.wireguard.interface
    try:
        routes = ctx.routes(socket.AF_INET6)
    except SourceError as e:
        return Outcome.failed("unreadable", f"IPv6 routes: {e}")
    outside = outside_tunnel(routes, tunnel)
    obs = {"routes_outside_tunnel": float(len(outside))}
    if outside:
        named = ", ".join(str(r) for r in outside[:_SHOWN])
        more = f" and {len(outside) - _SHOWN} more" if len(outside) > _SHOWN else ""
        return Outcome.failed(
            "route_outside",
            f"{len(outside)} IPv6 route(s) leave the namespace beside the tunnel {tunnel}: "
            f"{named}{more} (IPv6 should be off there; the tunnel's restart turns it off)",
            observations=obs,
        )
    # Say what was seen: routes read are not a sysctl, so "no routes" is never "IPv6 is off".
    through = sum(1 for r in routes if r.interface == tunnel)
    if through:
        seen = f"{through} through {tunnel}"
    elif routes:
        seen = f"{len(routes)} link-local or loopback only"
    else:
        seen = "no IPv6 routes at all"
    return Outcome.passed(f"no IPv6 route outside the tunnel ({seen})", observations=obs)
