"""``dns``: the configured names resolve through the VPN's resolver, inside the tunnel.

Order matters. First the resolver is found (``checks.dns.resolver``, else the
namespace's resolv.conf), then the route to it is looked up in the namespace:
when it does not leave through the WireGuard interface the check fails
``leak`` *without querying*, because the query itself would be the leak (the
names we look up, sent in clear to a resolver outside the tunnel). A resolver
on loopback also fails ``leak``: we cannot see where a local forwarder sends
the question, so it cannot be shown to stay inside the tunnel.

Each lookup is also an active probe through the tunnel: when the return path
is broken (the 92-byte failure) the query gets no answer and this check
fails ``no_answer`` even on an idle box.

Slow is not dead. Behind a saturated tunnel (a few bulk downloads queue
seconds of data in front of a query) answers come late, and a query may be
dropped from a full queue. So a query unanswered after ``slow_after`` is sent
once more on the same socket, and an answer to either, whenever it comes
before the check's budget runs out, is an answer: ``slow`` when it took longer
than ``slow_after``. Only no answer at all within the budget is ``no_answer``.
``slow`` never acts and never pages (degraded in the policy; DnsFailing leaves
it out).

Observations: ``latency_seconds:<name>`` per name answered (rendered as
``qbtvpn_dns_lookup_duration_seconds{name=...}``). Facts: ``resolver`` and
``resolver_interface`` (``qbtvpn_dns_resolver_info``).
"""

from __future__ import annotations

import ipaddress
import time

from qbt_vpn_watchdog.checks import Context, degraded, register, unsafe
from qbt_vpn_watchdog.results import UNKNOWN, CheckResult, Outcome
from qbt_vpn_watchdog.series import metric
from qbt_vpn_watchdog.sources import SourceError

LATENCY_PREFIX = "latency_seconds:"

# Most severe first: the reported reason is the worst one seen across names.
_SEVERITY = ("no_answer", "bad_response", "servfail", "refused", "nxdomain", "empty", "slow")
# A query sent outside the tunnel is the leak: unsafe. DNS failing or slow
# through a working tunnel is reported only (a dead tunnel is caught by
# return_path and handshake anyway).
REASONS = (
    degraded("no_resolver"),
    degraded("no_route"),
    unsafe("leak"),
    *(degraded(r) for r in _SEVERITY),
)

LOOKUP_DURATION = metric(
    "dns_lookup_duration_seconds",
    "gauge",
    "Latency of the last DNS lookup through the VPN's resolver.",
    "name",
)
RESOLVER_INFO = metric(
    "dns_resolver_info",
    "info",
    "The resolver the namespace uses and the interface the route to it leaves by.",
    "resolver",
    "interface",
)


def render(r: CheckResult | None):
    latency = LOOKUP_DURATION.family()
    info = RESOLVER_INFO.family()
    if r is not None:
        for key, value in sorted(r.observations.items()):
            if key.startswith(LATENCY_PREFIX):
                latency.add_metric([key[len(LATENCY_PREFIX) :]], value)
        resolver = r.facts.get("resolver", "")
        if resolver:
            info.add_metric(
                [], {"resolver": resolver, "interface": r.facts.get("resolver_interface", "")}
            )
    return latency, info


# The check's own budget is a little under the runner's timeout, so that a
# resolver that never answers is reported as `no_answer`, not as the runner's
# generic `timeout`.
_BUDGET = 0.8


@register(
    "dns",
    order=30,
    summary="names resolve through the VPN's resolver, inside the tunnel",
    reasons=REASONS,
    errors=UNKNOWN,  # a broken probe is not evidence
    on_link_event=True,
    series=(LOOKUP_DURATION, RESOLVER_INFO),
    render=render,
)
def check_dns(ctx: Context) -> Outcome:
    cfg = ctx.config.checks.dns
    tunnel = ctx.config.wireguard.interface
    server = ctx.resolver()
    if not server:
        where = (
            f"/etc/netns/{ctx.config.netns}/resolv.conf" if ctx.config.netns else "/etc/resolv.conf"
        )
        return Outcome.failed(
            "no_resolver", f"no nameserver in {where} and checks.dns.resolver is not set"
        )
    facts = {"resolver": server}
    if not _is_ip(server):
        return Outcome.failed(
            "no_resolver", f"resolver {server!r} is not an IP address", facts=facts
        )

    try:
        iface = ctx.route_interface(server)
    except SourceError as e:
        return Outcome.failed(
            "no_route", f"cannot look up the route to resolver {server}: {e}", facts=facts
        )
    if iface is None:
        return Outcome.failed(
            "no_route", f"no route to resolver {server} (is {tunnel} up?)", facts=facts
        )
    facts["resolver_interface"] = iface
    if iface != tunnel:
        if _is_loopback(server):
            why = (
                "is on loopback: where it forwards to cannot be checked;"
                " set checks.dns.resolver to the VPN's DNS"
            )
        else:
            why = f"is reached through {iface}, not the tunnel {tunnel}"
        return Outcome.failed("leak", f"resolver {server} {why}; not queried", facts=facts)

    deadline = time.monotonic() + _BUDGET * ctx.config.checks.dns.timeout
    observations: dict[str, float] = {}
    problems: list[tuple[str, str]] = []  # (reason, detail)
    for name in cfg.names:
        left = deadline - time.monotonic()
        if left <= 0:
            problems.append(("no_answer", f"{name}: not asked, no time left"))
            break
        try:
            ans = ctx.dns_query(name, server, left, retransmit_after=min(cfg.slow_after, left / 2))
        except SourceError as e:
            reason = "no_answer" if e.kind in ("timeout", "unreachable") else "bad_response"
            problems.append((reason, f"{name}: {e}"))
            if reason == "no_answer":
                break  # the resolver is not answering: asking more only burns the budget
            continue
        observations[LATENCY_PREFIX + name] = ans.latency
        if ans.rcode == "NOERROR":
            if not ans.addresses:
                problems.append(("empty", f"{name}: empty answer"))
            elif ans.latency > cfg.slow_after:
                again = ", asked twice" if ans.retransmitted else ""
                problems.append(
                    (
                        "slow",
                        f"{name}: answered in {ans.latency:.2f} s (> {cfg.slow_after:g} s{again})",
                    )
                )
        elif ans.rcode == "NXDOMAIN":
            problems.append(("nxdomain", f"{name}: NXDOMAIN"))
        elif ans.rcode == "REFUSED":
            problems.append(("refused", f"{name}: REFUSED by {server}"))
        else:
            problems.append(("servfail", f"{name}: {ans.rcode}"))

    if not problems:
        slowest = max(observations.values(), default=0.0)
        return Outcome.passed(
            f"{len(cfg.names)} name(s) via {server} on {iface}, slowest {slowest * 1000:.0f} ms",
            observations=observations,
            facts=facts,
        )
    reason = min((r for r, _ in problems), key=_SEVERITY.index)
    return Outcome.failed(
        reason, "; ".join(d for _, d in problems), observations=observations, facts=facts
    )


def _is_ip(server: str) -> bool:
    try:
        ipaddress.ip_address(server)  # also accepts a scoped "fe80::1%eth0"
    except ValueError:
        return False
    return True


def _is_loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server.split("%")[0]).is_loopback
    except ValueError:
        return False
