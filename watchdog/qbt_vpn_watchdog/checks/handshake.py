"""handshake: how long ago the tunnel's peer last completed a WireGuard handshake.

WireGuard re-handshakes at least every REKEY_AFTER_TIME (120 s) while traffic
flows, and a session older than REJECT_AFTER_TIME (180 s) is no longer
accepted by either side: a handshake that old means the tunnel carries
nothing. A fresh handshake does NOT prove the return path works (the 92-byte failure's
box had one): that is the ``return_path`` check's job.

The handshake's timestamp is on the wall clock, which NTP may step (a board
without a real-time clock syncs minutes after the tunnel is up). So the age
is the wall clock's only when a timestamp is first seen; after that it runs on
the monotonic clock, kept in the result's state: a clock stepped forward by an
hour must not make a live session "stale" and restart the tunnel, nor one
stepped back hide a dead one.
"""

from __future__ import annotations

from dataclasses import dataclass

from qbt_vpn_watchdog.checks import Context, register, unsafe
from qbt_vpn_watchdog.results import UNSAFE, Outcome
from qbt_vpn_watchdog.sources import SourceError
from qbt_vpn_watchdog.sources.tunnel import tunnel_peer


@register(
    "handshake",
    order=10,
    summary="the WireGuard peer completed a handshake recently",
    # Every failure is unsafe and a tunnel restart is its remedy: no session,
    # no tunnel. Its own error or timeout too (fail closed: it guards the tunnel).
    reasons=tuple(
        unsafe(r, restart=True) for r in ("missing", "unreadable", "no_peer", "never", "stale")
    ),
    errors=UNSAFE,
    restart_on_error=True,
    on_link_event=True,
)
def check(ctx: Context) -> Outcome:
    cfg = ctx.config.checks.handshake
    ifname = ctx.config.wireguard.interface
    try:
        device = ctx.wireguard()
    except SourceError as e:
        reason = "missing" if e.kind == "missing" else "unreadable"
        return Outcome.failed(reason, str(e))
    peer = tunnel_peer(device)
    if peer is None:
        return Outcome.failed("no_peer", f"{ifname} has no peer configured")
    facts = {"public_key": peer.public_key, "endpoint": peer.endpoint or ""}
    if peer.last_handshake is None:
        return Outcome.failed(
            "never",
            f"{ifname}: no handshake with {peer.endpoint or 'the peer'} yet",
            observations={"last_handshake_timestamp_seconds": 0.0},
            facts=facts,
        )
    wall_age = max(0.0, ctx.now() - peer.last_handshake)
    seen, age = _age(ctx, peer.last_handshake, wall_age)
    obs = {"last_handshake_timestamp_seconds": peer.last_handshake, "age_seconds": age}
    clock = (
        f" (the wall clock says {wall_age:.0f} s: it was stepped since)"
        if abs(wall_age - age) > CLOCK_STEP
        else ""
    )
    if age > cfg.max_age:
        return Outcome.failed(
            "stale",
            f"{ifname}: last handshake {age:.0f} s ago (> {cfg.max_age:g} s: session keys "
            f"expired){clock}",
            observations=obs,
            facts=facts,
            state=seen,
        )
    return Outcome.passed(
        f"last handshake {age:.0f} s ago{clock}", observations=obs, facts=facts, state=seen
    )


# A difference between the two ages this large is a stepped clock, not drift.
CLOCK_STEP = 30.0


@dataclass(frozen=True)
class Seen:
    """A handshake timestamp when the check first saw it: its age then (wall clock),
    and the monotonic time of that sighting."""

    timestamp: float
    age: float
    at: float


def _age(ctx: Context, timestamp: float, wall_age: float) -> tuple[Seen, float]:
    """(the sighting to keep, the handshake's age): on the monotonic clock since the
    timestamp was first seen, the wall clock's for a new one."""
    now = ctx.monotonic()
    prev = ctx.history[-1].state if ctx.history else None
    if isinstance(prev, Seen) and prev.timestamp == timestamp and now >= prev.at:
        return prev, prev.age + (now - prev.at)
    return Seen(timestamp, wall_age, now), wall_age
