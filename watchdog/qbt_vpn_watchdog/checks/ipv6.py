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

A route beside the tunnel is unsafe only when IPv6 can actually leave by it.
It cannot when the kill switch refuses IPv6 out of the route's interface, or
the kernel has no way out there at all (the killswitch check's probe of this
cycle, shared, not sent twice; only when that check is enabled) or when the route reaches only the LAN's own prefixes
(``checks.ipv6.lan_prefixes``, e.g. the ULA VPN-Confinement or any IPv6 LAN
puts on the veth). Such routes are reported (degraded), not acted on:
stopping torrents and restarting the tunnel over a path nothing can take is
remediation anyone on the LAN could trigger.

Reasons:
  route_outside    an IPv6 route leaves by an interface that is not the tunnel,
                   and IPv6 can leave by it
  route_contained  routes beside the tunnel, but nothing can leave by them
                   (the kill switch refuses IPv6 there, or LAN prefixes only)
  unreadable       the routing table could not be read (the namespace is gone?),
                   or routes beside the tunnel while the kill switch's probe
                   could not be read (whether IPv6 can leave is unknown)
"""

from __future__ import annotations

import ipaddress
import socket

from qbt_vpn_watchdog.checks import Context, degraded, register, unknown, unsafe
from qbt_vpn_watchdog.results import Outcome
from qbt_vpn_watchdog.sources import NO_PATH, REFUSED, KillSwitchReading, Route, SourceError

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
        # A path out beside the tunnel that IPv6 can take: hold the torrents.
        # On a namespace our script builds, the tunnel's restart is the remedy:
        # its restart-tunnel turns IPv6 off again (taking the routes with it)
        # and re-installs the kill switch. Elsewhere a restart changes nothing.
        unsafe("route_outside", restart=True, ours_only=True),
        degraded("route_contained"),
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
        probes, probe_error = _killswitch(ctx)
        lan = [ipaddress.IPv6Network(p, strict=False) for p in ctx.config.checks.ipv6.lan_prefixes]
        leaking = [r for r in outside if not contained(r, probes, lan)]
        obs["routes_leaking"] = float(len(leaking))
        if leaking and probe_error:
            # Whether IPv6 can leave by them is not known this cycle: never a reason to
            # act (the killswitch check reports its own probe's failure).
            return Outcome.failed(
                "unreadable",
                f"{len(leaking)} IPv6 route(s) beside the tunnel {tunnel} ({_named(leaking)}), "
                f"and the kill switch's probe could not be read: {probe_error}",
                observations=obs,
            )
        if leaking:
            fix = (
                "the tunnel's restart turns it off"
                if ctx.config.namespace.built_by_vpn_netns
                else "turn it off, or make the kill switch drop IPv6"
            )
            return Outcome.failed(
                "route_outside",
                f"{len(leaking)} IPv6 route(s) leave the namespace beside the tunnel {tunnel} "
                f"and IPv6 can take them: {_named(leaking)} (IPv6 should be off there; {fix})",
                observations=obs,
            )
        why = []
        refused = sorted({r.interface for r in outside if _refused(r, probes)})
        by_filter = [i for i in refused if probes and probes.verdict(i, "ipv6") == REFUSED]
        if by_filter:
            why.append(f"the kill switch refuses IPv6 out of {', '.join(by_filter)}")
        if len(by_filter) < len(refused):
            gone = ", ".join(i for i in refused if i not in by_filter)
            why.append(f"the kernel has no IPv6 way out of {gone} (link down, no address)")
        if any(_in_lan(r, lan) for r in outside):
            why.append(
                "the others reach only checks.ipv6.lan_prefixes"
                if refused
                else "they reach only checks.ipv6.lan_prefixes"
            )
        return Outcome.failed(
            "route_contained",
            f"{len(outside)} IPv6 route(s) beside the tunnel {tunnel}, but nothing can leave by "
            f"them: {'; '.join(why)} ({_named(outside)})",
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


def _named(routes: list[Route]) -> str:
    named = ", ".join(str(r) for r in routes[:_SHOWN])
    return named + (f" and {len(routes) - _SHOWN} more" if len(routes) > _SHOWN else "")


def _killswitch(ctx: Context) -> tuple[KillSwitchReading | None, str]:
    """This cycle's kill-switch probes when the killswitch check runs, and why not when
    they could not be read (``(None, "")``: the check is off, nothing is known)."""
    if not ctx.config.checks.killswitch.enabled:
        return None, ""
    try:
        return ctx.killswitch(), ""
    except SourceError as e:
        return None, str(e) or type(e).__name__


def _refused(r: Route, probes: KillSwitchReading | None) -> bool:
    # no_path: the kernel has no way out there at all (link down, no IPv6 address).
    return probes is not None and probes.verdict(r.interface, "ipv6") in (REFUSED, NO_PATH)


def _in_lan(r: Route, lan: list[ipaddress.IPv6Network]) -> bool:
    dest = ipaddress.ip_network(r.destination, strict=False)
    return isinstance(dest, ipaddress.IPv6Network) and any(dest.subnet_of(n) for n in lan)


def contained(r: Route, probes: KillSwitchReading | None, lan: list[ipaddress.IPv6Network]) -> bool:
    """Nothing can leave by ``r``: the kill switch refuses IPv6 out of its interface,
    or it reaches only the LAN's own prefixes."""
    return _refused(r, probes) or _in_lan(r, lan)
