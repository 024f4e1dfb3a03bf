"""return_path: traffic leaves through the tunnel and something comes back.

The 92-byte failure: the handshake completed, 3.51 GB went out, and in total
92 bytes came back: one handshake response (a WireGuard handshake response is
exactly 92 bytes on the wire; an initiation is 148, a keepalive 32). The
handshake looked fine; nothing noticed. So this check never looks at the
handshake's age. It reads two pairs of counters:

- peer counters (``rx_bytes``/``tx_bytes`` of the WireGuard peer) count what
  crossed the wire, handshake messages included;
- interface counters of the tunnel link count decrypted inner traffic only
  (keepalives and handshakes never reach them) under wireguard-go and
  boringtun (a TUN device). NOT on the kernel's WireGuard: there the link
  counts every authenticated message at its wire size, exactly like the peer
  counters (measured on Debian's 6.1 kernel in tests/vm: after the handshake
  and one 128-byte echo, link rx 252 bytes / 2 packets = peer rx 252 = 92 +
  160). So on the kernel, decrypted traffic is told from handshake responses
  by the link's packet count: only handshake responses came back exactly when
  the bytes are 92 times the packets (a data message is 32 bytes plus its
  payload padded to 16, a keepalive 32; neither is 92).

and it sends one probe of its own each cycle (a DNS query to the VPN's
resolver through the tunnel), so an idle box still gives evidence. Any answer,
even SERVFAIL or junk, proves packets come back.

Why the evidence window is at least 15 s: a healthy WireGuard peer that
received data and has nothing to send answers with a 32-byte keepalive after
KEEPALIVE_TIMEOUT (10 s). So even when the resolver itself is dead, a working
return path shows *some* growth of peer rx within ~10 s of our probe; the
broken one shows none, or only 92-byte handshake responses. An idle tunnel
(only our own persistent keepalives going out, which nobody answers) sends no
inner bytes and is never called broken.
"""

from __future__ import annotations

from dataclasses import dataclass

from qbt_vpn_watchdog.checks import Context, register, unsafe
from qbt_vpn_watchdog.results import UNSAFE, CheckResult, Outcome
from qbt_vpn_watchdog.sources import SourceError
from qbt_vpn_watchdog.sources.tunnel import tunnel_peer

HANDSHAKE_RESPONSE_BYTES = 92
# KEEPALIVE_TIMEOUT (10 s) + a margin for the probe's own timeout and scheduling.
MIN_WINDOW_SECONDS = 15.0
PROBE_TIMEOUT = 2.0


@dataclass(frozen=True)
class Sample:
    """Counters at one moment, plus whether this cycle's probe was answered."""

    at: float
    peer_key: str
    peer_rx: int
    peer_tx: int
    inner_rx: int
    inner_tx: int
    probe_sent: bool
    probe_answered: bool
    inner_rx_packets: int = 0
    # The kernel's WireGuard: the link counters count wire bytes of every message
    # (handshake responses included), not decrypted traffic. See the module docstring.
    link_counts_wire: bool = False

    def observations(self) -> dict[str, float]:
        """What is shown (``check --json``); the sample itself is the check's state."""
        return {
            "peer_rx_bytes": self.peer_rx,
            "peer_tx_bytes": self.peer_tx,
            "inner_rx_bytes": self.inner_rx,
            "inner_tx_bytes": self.inner_tx,
            "probe_sent": float(self.probe_sent),
            "probe_answered": float(self.probe_answered),
            "inner_rx_packets": self.inner_rx_packets,
            "link_counts_wire": float(self.link_counts_wire),
        }

    @classmethod
    def from_result(cls, r: CheckResult) -> Sample | None:
        """The sample an earlier run kept (None: error, timeout, no tunnel)."""
        return r.state.sample if isinstance(r.state, State) else None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    detail: str
    # Passed for now only because there is no evidence yet: the probe went
    # unanswered and the samples do not cover the window (a one-shot `check`
    # waits the window out and runs again).
    pending: bool = False


@dataclass(frozen=True)
class State:
    """What a run keeps for the next ones (``CheckResult.state``)."""

    sample: Sample
    verdict: Verdict


def pending(r: CheckResult | None) -> bool:
    """Whether this return_path result passed only for want of evidence."""
    return r is not None and isinstance(r.state, State) and r.state.verdict.pending


def _delta(new: int, old: int) -> int:
    # Never negative; samples from before a counter reset are dropped anyway.
    return new - old if new >= old else new


def _since_reset(history: list[Sample], now: Sample) -> list[Sample]:
    """The samples taken since the tunnel's counters last started again from 0.

    A re-created tunnel (a restart, ours or systemd's) is a new tunnel: a probe
    answered by the old one proves nothing about it, and its absolute counters
    are again what the failing box showed (rx 92, tx climbing), so they are
    judged on their own at once instead of waiting out a window of old samples.
    """
    seq = [*history, now]
    for i in range(len(seq) - 1, 0, -1):
        a, b = seq[i - 1], seq[i]
        if (
            b.peer_rx < a.peer_rx
            or b.peer_tx < a.peer_tx
            or b.inner_rx < a.inner_rx
            or b.inner_tx < a.inner_tx
            or b.inner_rx_packets < a.inner_rx_packets
        ):
            return history[i:]
    return history


def _only_handshake_responses(rx_bytes: int, rx_packets: int) -> bool:
    """Kernel link counters: every message received was a 92-byte handshake response."""
    return rx_bytes == HANDSHAKE_RESPONSE_BYTES * rx_packets


def assess(history: list[Sample], now: Sample, min_tx_bytes: int, window: float) -> Verdict:
    """Pure decision from earlier samples (oldest first) and the current one.

    Fails only when, over at least ``window`` seconds, we sent something into
    the tunnel (our probe, or ``min_tx_bytes`` of inner traffic) and nothing
    decrypted came back and the peer's wire rx grew by nothing or only by
    whole handshake responses.
    """
    if now.probe_answered:
        return Verdict(True, "ok", "probe through the tunnel answered")
    same_peer = _since_reset(
        [s for s in history if s.peer_key == now.peer_key and s.at < now.at], now
    )
    base = None
    for s in reversed(same_peer):  # the newest sample at least `window` old
        if now.at - s.at >= window:
            base = s
            break
    if base is None:
        # Not enough history for a fair window. The 92-byte failure's exact state is
        # still recognisable from absolute counters: data sent, nothing
        # decrypted ever received, peer rx only whole handshake responses.
        if now.link_counts_wire:
            nothing_decrypted = _only_handshake_responses(now.inner_rx, now.inner_rx_packets)
        else:
            nothing_decrypted = now.inner_rx == 0
        if (
            nothing_decrypted
            and now.inner_tx >= min_tx_bytes
            and now.peer_rx > 0
            and now.peer_rx % HANDSHAKE_RESPONSE_BYTES == 0
        ):
            return Verdict(
                False,
                "handshake_only",
                f"{now.inner_tx} bytes sent into the tunnel, nothing decrypted received; "
                f"peer rx is {now.peer_rx} bytes = {now.peer_rx // HANDSHAKE_RESPONSE_BYTES} "
                "handshake response(s) and no data",
            )
        return Verdict(
            True, "ok", "collecting evidence: probe unanswered, window not covered yet", True
        )

    span = now.at - base.at
    d_inner_rx = _delta(now.inner_rx, base.inner_rx)
    d_inner_tx = _delta(now.inner_tx, base.inner_tx)
    d_peer_rx = _delta(now.peer_rx, base.peer_rx)
    d_peer_tx = _delta(now.peer_tx, base.peer_tx)
    answered = any(s.probe_answered for s in same_peer if s.at > base.at)
    if answered:
        return Verdict(True, "ok", f"a probe was answered in the last {span:.0f} s")
    if now.link_counts_wire:
        d_packets = _delta(now.inner_rx_packets, base.inner_rx_packets)
        if not _only_handshake_responses(d_inner_rx, d_packets):
            return Verdict(
                True,
                "ok",
                f"{d_packets} messages ({d_inner_rx} bytes) received from the peer in "
                f"{span:.0f} s, not all of them handshake responses",
            )
    elif d_inner_rx > 0:
        return Verdict(
            True, "ok", f"{d_inner_rx} bytes received through the tunnel in {span:.0f} s"
        )
    if d_peer_rx > 0 and d_peer_rx % HANDSHAKE_RESPONSE_BYTES != 0:
        # Something other than handshake responses came back: at least the
        # peer's keepalive, so the return path works (the resolver may not).
        return Verdict(True, "ok", f"peer sent {d_peer_rx} bytes (keepalives) in {span:.0f} s")
    probes = any(s.probe_sent for s in same_peer if s.at > base.at) or now.probe_sent
    sent = d_inner_tx >= min_tx_bytes or (probes and d_inner_tx > 0)
    if not sent:
        return Verdict(True, "ok", f"idle: {d_inner_tx} bytes sent in {span:.0f} s")
    if d_peer_rx > 0:
        return Verdict(
            False,
            "handshake_only",
            f"in {span:.0f} s: {d_inner_tx} bytes sent, 0 decrypted bytes received, "
            f"peer rx grew only by {d_peer_rx // HANDSHAKE_RESPONSE_BYTES} handshake response(s) "
            f"({d_peer_rx} bytes) while peer tx grew by {d_peer_tx} bytes",
        )
    return Verdict(
        False,
        "no_return_traffic",
        f"in {span:.0f} s: {d_inner_tx} bytes sent into the tunnel "
        f"(peer tx +{d_peer_tx} bytes), nothing at all came back",
    )


def _probe(ctx: Context) -> tuple[bool, bool, str]:
    """Send one DNS query through the tunnel. Returns (sent, answered, note)."""
    # The probe is an extra: when its resolver or route cannot be found out (a
    # scoped or malformed nameserver, a netlink error), the counters judge alone,
    # and the check never turns into an error (unsafe) over it.
    try:
        server = ctx.resolver()
        if not server:
            return False, False, "no resolver to probe"
        # A resolver not routed through the tunnel proves nothing about the tunnel
        # (that is the dns check's `leak`); count on the counters alone then.
        if ctx.route_interface(server) != ctx.config.wireguard.interface:
            return False, False, f"resolver {server} is not routed through the tunnel"
    except (SourceError, OSError, ValueError) as e:
        return False, False, f"no probe: {e}"
    name = ctx.config.checks.dns.names[0]
    try:
        ctx.dns_query(name, server, PROBE_TIMEOUT)
    except SourceError as e:
        # A malformed answer is still an answer: packets came back.
        return True, e.kind == "bad_response", f"probe: {e}"
    return True, True, ""


@register(
    "return_path",
    order=20,
    summary="traffic sent into the tunnel gets answers back (the 92-byte failure)",
    # Torrent traffic goes nowhere: unsafe, and a tunnel restart is the remedy.
    # Its own error or timeout too (fail closed: it guards the tunnel).
    reasons=tuple(
        unsafe(r, restart=True) for r in ("no_tunnel", "handshake_only", "no_return_traffic")
    ),
    errors=UNSAFE,
    restart_on_error=True,
    on_link_event=True,
    # An unanswered probe passes only provisionally: the counters need a window.
    settle_after=MIN_WINDOW_SECONDS,
)
def check(ctx: Context) -> Outcome:
    cfg = ctx.config.checks.return_path
    ifname = ctx.config.wireguard.interface
    try:
        device = ctx.wireguard()
    except SourceError as e:
        return Outcome.failed("no_tunnel", str(e))
    peer = tunnel_peer(device)
    if peer is None:
        return Outcome.failed("no_tunnel", f"{ifname} has no peer configured")
    try:
        link = ctx.tunnel_link()
    except SourceError as e:
        return Outcome.failed("no_tunnel", str(e))
    if link is None or not link.up:
        return Outcome.failed("no_tunnel", f"{ifname} is {'missing' if link is None else 'down'}")

    sent, answered, note = _probe(ctx)
    if not answered:
        # Read the counters again after the unanswered probe, so whatever did
        # come back meanwhile (a keepalive) is in this sample. An answered
        # probe decides on its own; the cycle's first read is good enough then.
        try:
            device = ctx.wireguard(fresh=True)
            link = ctx.tunnel_link(fresh=True) or link
        except SourceError as e:
            return Outcome.failed("no_tunnel", str(e))
        peer = tunnel_peer(device) or peer
    now = Sample(
        ctx.now(),
        peer.public_key,
        peer.rx_bytes,
        peer.tx_bytes,
        link.rx_bytes,
        link.tx_bytes,
        sent,
        answered,
        link.rx_packets,
        device.reader == "kernel",
    )
    history = [s for s in map(Sample.from_result, ctx.history) if s is not None]
    window = max(MIN_WINDOW_SECONDS, ctx.config.watchdog.interval)
    v = assess(history, now, cfg.min_tx_bytes, window)
    detail = v.detail if v.ok or not note else f"{v.detail}; {note}"
    return Outcome(
        v.ok,
        v.reason,
        detail,
        observations=now.observations(),
        facts={"public_key": peer.public_key},
        state=State(now, v),
        provisional=v.pending,
    )
