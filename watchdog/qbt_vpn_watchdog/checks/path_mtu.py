"""``path_mtu``: packets as large as the tunnel's MTU cross it, both ways.

A path-MTU black hole: somewhere between the box and the VPN server, outer
WireGuard packets above some size are dropped without a word. Handshakes,
keepalives, DNS, the exit-IP query and small HTTP all still work, so every
other check stays ok, while every full-size TCP segment of a download is lost:
nothing downloads (the lab's `mtu` faults: a 5 MB download gets 0 bytes).

Each cycle this check sends one DF-marked ICMP echo of exactly the tunnel's
MTU, and a small one, to the VPN's gateway (``checks.path_mtu.target``, by
default the VPN's resolver, which on AirVPN is the gateway); the reply is as
large as the request, so one answer proves both directions. How it measures,
which way fails and how the largest passing size is found: see
``qbt_vpn_watchdog.sources.pmtu``.

Reasons:

- ``large_packets_lost``: small echoes come back, full-size ones do not.
  Reported with the largest size that crosses (``qbtvpn_path_mtu_bytes``)
  and the direction when it can be told.
- ``no_echo``: not even the small echo comes back. The far end does not answer
  this probe (ICMP filtered), or nothing crosses at all (return_path and
  handshake report that). Nothing is known about size; never a black hole.
- ``not_measured``: no target in the tunnel to measure against, or the tunnel
  interface is not there (the tunnel checks report that).

A failure is reported only when the measurement before it failed too (the
first one passes as *provisional*, and the loop measures again a second
later): in a saturated tunnel a queue may drop a full-size echo and its
retries now and then (seen: 5 single false reports in 3 minutes at 48 MB/s
before this rule), while a black hole drops every one, every time.

All of them are **degraded**: reported and alerted on, never acted on.
Nothing leaks (what crosses, crosses inside the tunnel; what is too large is
lost inside it), so holding torrents stopped protects nothing; and no action
of the watchdog fixes it: a tunnel restart or rebind does not change the
path's MTU, and flapping the tunnel would also break the small traffic that
works. The fix is configuration (a smaller MTU, or another server): a human's
job, which the alert and docs/runbook.md#qbtvpntunnelmtublackhole say how to do.
"""

from __future__ import annotations

from qbt_vpn_watchdog.checks import Context, degraded, register
from qbt_vpn_watchdog.results import DEGRADED, CheckResult, Outcome
from qbt_vpn_watchdog.series import metric
from qbt_vpn_watchdog.sources import SourceError

REASONS = (degraded("large_packets_lost"), degraded("no_echo"), degraded("not_measured"))
# The check's own budget is under the runner's timeout, so that a long search
# ends in its own answer (a lower bound), not in the runner's `timeout`.
_BUDGET = 0.8

PATH_MTU = metric(
    "path_mtu_bytes",
    "gauge",
    "Largest packet (IP bytes) that crossed the tunnel both ways at the last probe: the "
    "tunnel's MTU when full-size packets cross; absent when it could not be measured.",
)
TUNNEL_MTU = metric("tunnel_mtu_bytes", "gauge", "The MTU set on the tunnel interface.")


def render(r: CheckResult | None):
    path, tunnel = PATH_MTU.family(), TUNNEL_MTU.family()
    if r is not None:
        if "path_mtu_bytes" in r.observations:
            path.add_metric([], r.observations["path_mtu_bytes"])
        if "tunnel_mtu_bytes" in r.observations:
            tunnel.add_metric([], r.observations["tunnel_mtu_bytes"])
    return path, tunnel


SUSPECT = "suspect"  # the state of a first, unconfirmed failed measurement


def _seen_before(ctx: Context) -> bool:
    """The measurement before this one failed too (reported, or held back as suspect)."""
    if not ctx.history:
        return False
    last = ctx.history[-1]
    return last.state == SUSPECT or last.reason in ("large_packets_lost", "no_echo")


@register(
    "path_mtu",
    order=35,
    summary="packets as large as the tunnel's MTU cross it, both ways",
    reasons=REASONS,
    errors=DEGRADED,  # a broken probe is no evidence, and this check never acts anyway
    series=(PATH_MTU, TUNNEL_MTU),
    render=render,
)
def check(ctx: Context) -> Outcome:
    cfg = ctx.config.checks.path_mtu
    tunnel = ctx.config.wireguard.interface
    try:
        link = ctx.tunnel_link()
    except SourceError as e:  # the namespace is gone: the tunnel checks report that
        return Outcome.failed("not_measured", f"cannot read {tunnel}: {e}")
    if link is None or not link.up:
        state = "missing" if link is None else "down"
        return Outcome.failed("not_measured", f"{tunnel} is {state}: nothing to measure")
    obs = {"tunnel_mtu_bytes": float(link.mtu)}
    target = cfg.target or ctx.resolver()
    if not target or ":" in target:
        return Outcome.failed(
            "not_measured",
            "no IPv4 address to probe: set checks.path_mtu.target (the VPN's gateway)",
            observations=obs,
        )
    facts = {"target": target}
    # Never probe outside the tunnel: it would measure another path.
    try:
        via = ctx.route_interface(target)
    except SourceError as e:
        return Outcome.failed(
            "not_measured", f"cannot look up the route to {target}: {e}", observations=obs
        )
    if via != tunnel:
        where = "no route" if via is None else f"the route leaves by {via}"
        return Outcome.failed(
            "not_measured",
            f"{target} is not reached through {tunnel} ({where}); not probed",
            observations=obs,
            facts=facts,
        )
    again = _seen_before(ctx)
    # A first look stops once full size is seen lost (about 2 s); the measurement
    # that confirms it finds the size and the way (about 4 s more).
    try:
        m = ctx.path_mtu(target, link.mtu, _BUDGET * cfg.timeout, thorough=again)
    except SourceError as e:  # no CAP_NET_RAW, the namespace gone, the target unroutable
        return Outcome.failed("not_measured", str(e), observations=obs, facts=facts)
    if m is None:
        return Outcome.failed("not_measured", "no path-MTU prober configured", observations=obs)
    if not m.full_size and not again:
        what = "no echo came back" if not m.answered else "full-size echoes were lost"
        return Outcome.passed(
            f"{what} to {target} once; measuring again before saying so",
            observations=obs,
            facts=facts,
            state=SUSPECT,
            provisional=True,
        )
    if m.full_size:
        obs["path_mtu_bytes"] = float(m.tunnel_mtu)
        rtt = f", {m.rtt * 1000:.0f} ms" if m.rtt is not None else ""
        return Outcome.passed(
            f"{m.tunnel_mtu}-byte packets cross both ways to {target}{rtt}",
            observations=obs,
            facts=facts,
        )
    if not m.answered:
        return Outcome.failed(
            "no_echo",
            f"{target} answered no ICMP echo, small or large ({m.probes} sent): the path MTU "
            "cannot be measured (if it never answers ping, set checks.path_mtu.target to a "
            "tunnel address that does, or disable the check)",
            observations=obs,
            facts=facts,
        )
    largest = m.largest or 0
    obs["path_mtu_bytes"] = float(largest)
    way = {"down": "from the VPN server", "up": "to the VPN server"}.get(m.direction, "")
    facts["direction"] = m.direction or "unknown"
    return Outcome.failed(
        "large_packets_lost",
        f"packets of {link.mtu} bytes (the MTU of {tunnel}) are lost"
        f"{' ' + way if way else ''}, small ones cross: the largest that crosses to {target} "
        f"and back is {largest} bytes. Set the tunnel's MTU to {largest} or less "
        "(docs/runbook.md#qbtvpntunnelmtublackhole)",
        observations=obs,
        facts=facts,
    )
