"""webui: the WebUI works from the LAN and is not reachable through the VPN.

Works (acceptance criteria 5, 10, 11): the watchdog is logged in at
``qbittorrent.url`` (this cycle's state read proves the login), and, when the
LAN uses another URL (``checks.webui.lan_url``), a qBittorrent WebUI answers
there from where the watchdog runs (an unauthenticated GET of
``/api/v2/app/version``: it needs no login, so it never counts towards a ban).

Not exposed (criterion 6), from cheapest to strongest evidence:
  1. the WebUI port is not the forwarded port (a forwarded port is reachable
     from the whole internet at the VPN's exit address);
  2. the WebUI is not bound to a tunnel address;
  3. with ``probe_exposure``, from inside the namespace and through the tunnel,
     no qBittorrent WebUI answers at the VPN server's public address (the peer
     endpoint, when it is an IP), at ``probe_addresses``, or at the expected
     exits (``checks.exit_ip.allowed_ips``), on the WebUI port and the
     forwarded port. This catches a port forward
     (or a DNAT on the server) that the first two cannot see. A probe that
     gets no answer proves nothing either way, so it never fails the check.
A WebUI bound to all addresses (``*``) also listens on the tunnel: that alone
is not a failure (the VPN forwards only the forwarded port), it is reported
in the detail.
"""

from __future__ import annotations

import ipaddress
import re
from concurrent.futures import ThreadPoolExecutor

from qbt_vpn_watchdog.checks import Context, degraded, register
from qbt_vpn_watchdog.checks.bind import source_reason
from qbt_vpn_watchdog.results import DEGRADED, Outcome
from qbt_vpn_watchdog.sources import HttpResponse, SourceError
from qbt_vpn_watchdog.sources.qbittorrent import safe_url
from qbt_vpn_watchdog.sources.tunnel import routable, tunnel_peer

# All reported, never acted on. ``exposed`` is a security problem, but stopping
# torrents does not close the WebUI and it does not leak torrent traffic: it is
# alerted on (critical), not remediated.
REASONS = tuple(
    degraded(r) for r in ("login", "password_file", "unreachable", "bad_response", "exposed")
)
VERSION_PATH = "/api/v2/app/version"
ALL_ADDRESSES = ("", "*", "0.0.0.0", "::")
_VERSION = re.compile(rb"v?\d+\.\d+(\.\d+)*[\w.+-]*")


def looks_like_qbittorrent(r: HttpResponse) -> bool:
    """Is this the answer of qBittorrent's WebUI to an unauthenticated GET of app/version?"""
    body = r.body.strip()
    if r.status == 403:
        return body == b"Forbidden"  # not logged in
    if r.status == 200:
        return _VERSION.fullmatch(body) is not None  # whitelisted or LocalHostAuth off
    if r.status == 401:
        # Host header validation (on by default, and kept on by 5.x installs)
        # answers a Host header whose port is not the WebUI's, which is what a
        # forward from another public port delivers, with a bare 401. Its
        # clickjacking headers, sent on every answer, tell it from other 401s.
        frame = r.headers.get("x-frame-options", "").upper() == "SAMEORIGIN"
        csp = "form-action 'self'" in r.headers.get("content-security-policy", "")
        return body == b"Unauthorized" and (frame or csp)
    return False


def _endpoint_ip(endpoint: str | None) -> str | None:
    """The IP of a WireGuard endpoint "1.2.3.4:1637" / "[2001:db8::1]:1637"; None for names."""
    if not endpoint or ":" not in endpoint:
        return None
    host = endpoint.rsplit(":", 1)[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _url(host: str, port: int) -> str:
    h = f"[{host}]" if ":" in host else host
    return f"http://{h}:{port}{VERSION_PATH}"


def exposure_targets(ctx: Context, webui_port: int) -> list[tuple[str, int]]:
    cfg = ctx.config
    # The exits we expect (exit_ip's allowed_ips) are where a forward would be.
    addrs = list(
        dict.fromkeys([*cfg.checks.webui.probe_addresses, *cfg.checks.exit_ip.allowed_ips])
    )
    try:
        peer = tunnel_peer(ctx.wireguard())
        ip = _endpoint_ip(peer.endpoint if peer else None)
        if ip and ip not in addrs:
            addrs.append(ip)
    except SourceError:
        pass  # no peer to ask about: the handshake check reports that
    ports = [webui_port]
    if cfg.qbittorrent.forwarded_port and cfg.qbittorrent.forwarded_port != webui_port:
        ports.append(cfg.qbittorrent.forwarded_port)
    return [(a, p) for a in addrs for p in ports]


@register(
    "webui",
    order=60,
    summary="the WebUI answers on the LAN and not through the VPN",
    reasons=REASONS,
    errors=DEGRADED,
)
def check(ctx: Context) -> Outcome:
    cfg = ctx.config
    wc = cfg.checks.webui
    url = cfg.qbittorrent.url.rstrip("/")
    lan = (wc.lan_url or url).rstrip("/")
    try:
        s = ctx.qbittorrent()  # logged in at qbittorrent.url
    except SourceError as e:
        return Outcome.failed(source_reason(e), f"WebUI: {e}")
    obs: dict[str, float] = {"webui_port": float(s.webui_port)}
    # Shown without a user:password@ (a reverse proxy's basic auth in the URL): details
    # are logged and printed by `check --json`.
    shown_lan, shown_url = safe_url(lan), safe_url(url)
    facts = {"lan_url": shown_lan, "webui_address": s.webui_address or "*"}

    if lan != url:
        try:
            r = ctx.webui_probe(lan, 0.4 * wc.timeout)
        except SourceError as e:
            return Outcome.failed(
                "unreachable", f"WebUI on the LAN: {e}", observations=obs, facts=facts
            )
        obs["lan_latency_seconds"] = r.latency
        if not looks_like_qbittorrent(r):
            return Outcome.failed(
                "unreachable",
                f"{shown_lan} answers HTTP {r.status}, not like qBittorrent's WebUI",
                observations=obs,
                facts=facts,
            )

    forwarded = cfg.qbittorrent.forwarded_port
    if forwarded and s.webui_port == forwarded:
        return Outcome.failed(
            "exposed",
            f"the WebUI listens on {s.webui_port}, the port the VPN forwards from the internet",
            observations=obs,
            facts=facts,
        )
    tunnel: set = set()
    try:
        link = ctx.tunnel_link()
        if link is not None:
            tunnel |= routable(link.addresses)
    except SourceError:
        pass  # the bind check reports a missing tunnel
    if s.interface_name == cfg.wireguard.interface:
        tunnel |= routable(s.interface_addresses)
    bound = routable([s.webui_address]) if s.webui_address not in ALL_ADDRESSES else set()
    if bound & tunnel:
        return Outcome.failed(
            "exposed",
            f"the WebUI is bound to {s.webui_address}, a tunnel address",
            observations=obs,
            facts=facts,
        )

    note = ", also on the tunnel" if s.webui_address in ALL_ADDRESSES and tunnel else ""
    if wc.probe_exposure:
        targets = exposure_targets(ctx, s.webui_port)
        obs["exposure_probes"] = float(len(targets))
        answered = _probe(ctx, targets, 0.4 * wc.timeout)
        obs["exposure_answers"] = float(len(answered))
        if answered:
            where = ", ".join(f"{a}:{p}" for a, p in answered)
            return Outcome.failed(
                "exposed",
                f"a qBittorrent WebUI answers through the tunnel at {where}",
                observations=obs,
                facts=facts,
            )
    return Outcome.passed(
        f"logged in at {shown_url}; WebUI on {s.webui_address or '*'}:{s.webui_port}{note}, "
        "not reachable through the VPN",
        observations=obs,
        facts=facts,
    )


def _probe(ctx: Context, targets: list[tuple[str, int]], timeout: float) -> list[tuple[str, int]]:
    """The targets where a qBittorrent WebUI answered; all probed at once."""
    if not targets:
        return []

    def one(target: tuple[str, int]) -> bool:
        try:
            return looks_like_qbittorrent(ctx.http_get(_url(*target), timeout, 4096))
        except SourceError:
            return False  # nothing answered: no evidence either way

    with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
        results = list(pool.map(one, targets))
    return [t for t, hit in zip(targets, results, strict=True) if hit]
