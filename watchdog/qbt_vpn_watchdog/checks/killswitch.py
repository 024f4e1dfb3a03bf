"""killswitch: a packet out of any interface but the tunnel is refused, IPv4 and IPv6.

Every other check watches a symptom; this one watches the guard. The kill
switch is what keeps torrent traffic in when a route changes (a tunnel
re-created, a router advertisement, a host update): with it gone, every
other check stays ok until the next route change leaks.

The proof is behavioural, not a reading of rules (sources/killswitch.py):
from inside the namespace, one datagram out of each interface but lo and the
tunnel, once per family. A kill switch refuses it (``sendto`` fails with
EPERM: a drop or reject in a netfilter output hook). It relies on nothing
else: any table name, nftables or iptables, any rule shape, as long as the
kill switch is a packet filter on the output path; a kill switch made of
routes only (no filter) is reported as missing. The probe cannot leave the
host even with no kill switch (TTL 0, link-local multicast: docs/checks.md).

Per interface and family a probe is ``refused`` (good), ``open`` (nothing
refused it) or ``no_path`` (the kernel has no way out there: the link is
down, or IPv6 is off on it; nothing can leave that way now, and the next
cycle probes again).

Reasons:
  missing     a probe gets out and the namespace has no netfilter table at all
  lan_open    IPv4 gets out of an interface although a kill switch exists
              (a rule accepts output there: to any address, not only replies)
  ipv6_open   IPv4 is refused everywhere, IPv6 gets out of an interface
  unreadable  the probes could not be sent (namespace gone, no prober, a
              local resource error): the watchdog cannot tell
A tunnel restart is the remedy only on a namespace our vpn-netns.sh builds
(its restart-tunnel re-installs the kill switch, ``namespace.built_by_vpn_netns``);
elsewhere the torrents are held until someone fixes the rules.
"""

from __future__ import annotations

from qbt_vpn_watchdog.checks import Context, register, unknown, unsafe
from qbt_vpn_watchdog.results import CheckResult, Outcome
from qbt_vpn_watchdog.series import metric
from qbt_vpn_watchdog.sources import (
    NO_PATH,
    OPEN,
    REFUSED,
    VERDICTS,
    KillSwitchReading,
    LeakProbe,
    SourceError,
)

REASONS = (
    unsafe("missing", restart=True, ours_only=True),
    unsafe("lan_open", restart=True, ours_only=True),
    unsafe("ipv6_open", restart=True, ours_only=True),
    unknown("unreadable"),
)

PROBE_RESULT = metric(
    "killswitch_probe_result",
    "gauge",
    "1 for what the kill-switch probe out of this interface met (refused: good; open: nothing "
    "refused it; no_path: no way out there), 0 for the others.",
    "interface",
    "family",
    "verdict",
)


def _key(p: LeakProbe) -> str:
    return f"{p.interface} {p.family}"


def render(r: CheckResult | None):
    fam = PROBE_RESULT.family()
    if r is not None:
        for key, verdict in sorted(r.facts.items()):
            interface, _, family = key.partition(" ")
            if family not in ("ipv4", "ipv6"):
                continue
            for v in VERDICTS:
                fam.add_metric([interface, family, v], 1.0 if v == verdict else 0.0)
    return (fam,)


def _names(probes: list[LeakProbe]) -> str:
    by_if: dict[str, list[str]] = {}
    for p in probes:
        by_if.setdefault(p.interface, []).append("IPv4" if p.family == "ipv4" else "IPv6")
    return ", ".join(f"{i} ({'/'.join(fs)})" for i, fs in by_if.items())


def assess(reading: KillSwitchReading) -> Outcome:
    """The verdict from one set of probes (pure: tested without a namespace)."""
    probes = list(reading.probes)
    facts = {_key(p): p.verdict for p in probes}
    obs = {
        "probes": float(len(probes)),
        "refused": float(sum(p.verdict == REFUSED for p in probes)),
        "open": float(sum(p.verdict == OPEN for p in probes)),
    }
    kw = {"facts": facts, "observations": obs}
    if not probes:
        return Outcome.passed(
            "no interface besides the tunnel and lo: nothing can leave another way", **kw
        )
    open4 = [p for p in probes if p.verdict == OPEN and p.family == "ipv4"]
    open6 = [p for p in probes if p.verdict == OPEN and p.family == "ipv6"]
    tables = reading.tables
    listed = "" if tables is None else f" (netfilter tables: {', '.join(tables) or 'none'})"
    if open4 or open6:
        escaped = _names(open4 + open6)
        if tables == () or (tables is None and not any(p.verdict == REFUSED for p in probes)):
            return Outcome.failed(
                "missing",
                f"no kill switch: nothing refuses a packet out of {escaped}{listed}; traffic "
                "leaks there as soon as a route points that way",
                **kw,
            )
        if open4:
            return Outcome.failed(
                "lan_open",
                f"the kill switch lets packets to any address out of {escaped}{listed}: a rule "
                "accepts output there beyond the replies the WebUI needs",
                **kw,
            )
        return Outcome.failed(
            "ipv6_open",
            f"IPv6 is not refused out of {escaped}{listed}: an IPv6 route or router "
            "advertisement there would leak",
            **kw,
        )
    refused = [p for p in probes if p.verdict == REFUSED]
    no_path = [p for p in probes if p.verdict == NO_PATH]
    detail = f"refused out of {_names(refused)}" if refused else "no probe could be sent"
    if no_path:
        detail += f"; no way out at all from {_names(no_path)} (link down or family off)"
    return Outcome.passed(detail, **kw)


@register(
    "killswitch",
    order=65,
    summary="a packet out of any interface but the tunnel is refused (IPv4 and IPv6)",
    reasons=REASONS,
    series=(PROBE_RESULT,),
    render=render,
)
def check(ctx: Context) -> Outcome:
    try:
        reading = ctx.killswitch()
    except SourceError as e:
        return Outcome.failed("unreadable", f"kill-switch probes: {e}")
    return assess(reading)
