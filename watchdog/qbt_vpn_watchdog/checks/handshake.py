"""handshake: how long ago the tunnel's peer last completed a WireGuard handshake.

WireGuard re-handshakes at least every REKEY_AFTER_TIME (120 s) while traffic
flows, and a session older than REJECT_AFTER_TIME (180 s) is no longer
accepted by either side: a handshake that old means the tunnel carries
nothing. A fresh handshake does NOT prove the return path works (the 92-byte failure's
box had one): that is the ``return_path`` check's job.
"""

from __future__ import annotations

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
    age = max(0.0, ctx.now() - peer.last_handshake)
    obs = {"last_handshake_timestamp_seconds": peer.last_handshake, "age_seconds": age}
    if age > cfg.max_age:
        return Outcome.failed(
            "stale",
            f"{ifname}: last handshake {age:.0f} s ago (> {cfg.max_age:g} s: session keys expired)",
            observations=obs,
            facts=facts,
        )
    return Outcome.passed(f"last handshake {age:.0f} s ago", observations=obs, facts=facts)
