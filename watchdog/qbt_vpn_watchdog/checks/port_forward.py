"""port_forward: the forwarded port answers from outside the tunnel.

What a torrent box on AirVPN pays for: peers on the internet reach
qBittorrent through AirVPN's static port forward (the exit address and the
port reserved in the client area, forwarded to the client's tunnel address).
Nothing inside the namespace can see whether that works, so this check
connects from *outside* it: from the host (``checks.port_forward.probe_netns``
= "", the root namespace, which reaches the exit address over the internet
like any peer) to the exit address and ``qbittorrent.forwarded_port``. A
completed TCP handshake is qBittorrent (libtorrent) answering through the
forward and the tunnel. No BitTorrent handshake follows: libtorrent answers
one only for an info-hash it has, and naming a torrent of the box to the
outside is not worth what it would add. The connection is closed at once.

The exit address is ``checks.port_forward.exit_ip``, or the one the exit_ip
check saw last. One SYN every ``interval`` (300 s by default): a closed port
stalls seeding, it leaks nothing, so there is no hurry.

Reasons (all degraded: reported, never acted on):
  closed          no answer, or refused: the forward is gone, or qBittorrent
                  listens on another port (the detail says which it listens on)
  not_configured  qbittorrent.forwarded_port is 0
  no_exit_ip      no exit address known yet (exit_ip has not answered)
  unreadable      the connect could not be tried (a local error)
"""

from __future__ import annotations

from qbt_vpn_watchdog.checks import Context, degraded, register
from qbt_vpn_watchdog.results import CheckResult, Outcome
from qbt_vpn_watchdog.series import metric
from qbt_vpn_watchdog.sources import SourceError

REASONS = tuple(degraded(r) for r in ("closed", "not_configured", "no_exit_ip", "unreadable"))

CONNECT_SECONDS = metric(
    "port_forward_connect_seconds",
    "gauge",
    "Seconds the last TCP connect to the exit address and forwarded port took to complete.",
)

# The connect's own budget, a little under the runner's timeout, so that a
# silent port is reported as `closed` with its detail, not as a bare `timeout`.
_BUDGET = 0.8


def render(r: CheckResult | None):
    fam = CONNECT_SECONDS.family()
    if r is not None and r.ok and "connect_seconds" in r.observations:
        fam.add_metric([], r.observations["connect_seconds"])
    return (fam,)


def _listening_hint(ctx: Context, port: int) -> str:
    try:
        listen = ctx.qbittorrent().listen_port
    except SourceError:
        return ""
    if listen and listen != port:
        return f"; qBittorrent listens on port {listen}, not the forwarded {port}"
    return ""


@register(
    "port_forward",
    order=90,
    summary="the forwarded port answers from outside the tunnel (exit address, TCP)",
    reasons=REASONS,
    series=(CONNECT_SECONDS,),
    render=render,
)
def check(ctx: Context) -> Outcome:
    cfg = ctx.config.checks.port_forward
    port = ctx.config.qbittorrent.forwarded_port
    if not port:
        return Outcome.failed(
            "not_configured", "qbittorrent.forwarded_port is 0: no forwarded port to check"
        )
    exit_ip = cfg.exit_ip or ctx.exit_ip
    if not exit_ip:
        # Right after start exit_ip runs in the same cycle: ask the loop to run
        # this again in a second (once), not an interval (300 s) later.
        again = not (ctx.history and ctx.history[-1].reason == "no_exit_ip")
        return Outcome.failed(
            "no_exit_ip",
            "no exit address known yet: exit_ip has not reported one "
            "(or set checks.port_forward.exit_ip)",
            provisional=again,
        )
    where = cfg.probe_netns or "the host"
    try:
        ans = ctx.tcp_connect(cfg.probe_netns or None, exit_ip, port, _BUDGET * cfg.timeout)
    except SourceError as e:
        return Outcome.failed("unreadable", f"connect from {where}: {e}")
    facts = {"target": f"{exit_ip}:{port}"}
    if ans.outcome == "connected":
        return Outcome.passed(
            f"{exit_ip}:{port} answered from {where} in {ans.latency * 1000:.0f} ms",
            observations={"connect_seconds": ans.latency},
            facts=facts,
        )
    return Outcome.failed(
        "closed",
        f"{exit_ip}:{port} from {where}: {ans.detail}: peers on the internet "
        f"cannot reach qBittorrent, seeding stalls{_listening_hint(ctx, port)}",
        facts=facts,
    )
