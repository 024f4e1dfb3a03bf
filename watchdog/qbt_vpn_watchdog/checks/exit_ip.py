"""``exit_ip``: the address the internet sees, asked from inside the namespace.

The endpoint (AirVPN's ``/api/whatismyip/`` by default) answers JSON like
``{"ip": "...", "airvpn": true, "geo": {...}, "result": "ok"}``. The body is
capped at 64 KiB and validated; HTML (a captive portal, an error page) or junk
is a failed check with reason ``bad_response``, never an exception.

When it passes (the order below is the order of the tests):
  1. ``ip == host_public_ip``                      -> ``leak``, whatever else holds
  2. ``ip`` in ``allowed_ips``                     -> pass (an explicit allow wins)
  3. ``require_airvpn`` and ``airvpn`` is true     -> pass
  4. ``require_airvpn``                            -> ``not_airvpn``
  5. ``allowed_ips`` not empty                     -> ``not_allowed``
  6. otherwise (neither set)                       -> pass: the IP is only reported
So with both set, either an AirVPN exit or a listed IP passes ("optionally also
when the IP is in a configured list").

AirVPN bans clients sending more than 600 requests per 10 minutes; the runner
runs this check on its own interval (``checks.exit_ip.interval``, default 60 s).
"""

from __future__ import annotations

import ipaddress
import json

from qbt_vpn_watchdog.checks import Context, degraded, register, unsafe
from qbt_vpn_watchdog.results import UNKNOWN, CheckResult, Outcome
from qbt_vpn_watchdog.series import metric
from qbt_vpn_watchdog.sources import SourceError

MAX_BYTES = 64 * 1024
# An exit that is the host's own, or not the VPN's, is a leak: unsafe. The
# endpoint in trouble is reported only: AirVPN's API has rate limits and
# outages, and a dead tunnel is caught by return_path and handshake anyway.
REASONS = (
    unsafe("leak"),
    unsafe("not_airvpn"),
    unsafe("not_allowed"),
    degraded("bad_response"),
    degraded("unreachable"),
    degraded("tls"),
)

EXIT_IP_INFO = metric(
    "exit_ip_info", "info", "The exit address the exit-IP endpoint saw.", "ip", "country"
)
EXIT_IP_AIRVPN = metric(
    "exit_ip_airvpn",
    "gauge",
    "1 when the exit-IP endpoint says the request came through AirVPN, else 0.",
)


def render(r: CheckResult | None):
    info = EXIT_IP_INFO.family()
    airvpn = EXIT_IP_AIRVPN.family()
    if r is not None:
        ip = r.facts.get("ip", "")
        if ip:
            info.add_metric([], {"ip": ip, "country": r.facts.get("country", "")})
        if "airvpn" in r.observations:
            airvpn.add_metric([], r.observations["airvpn"])
    return info, airvpn


# The HTTP budget is a little under the runner's timeout so that a hung
# endpoint is reported as `unreachable` with its detail, not as a bare `timeout`.
_BUDGET = 0.9


@register(
    "exit_ip",
    order=40,
    summary="the exit address is the VPN's, asked from inside the namespace",
    reasons=REASONS,
    errors=UNKNOWN,  # a broken probe is not evidence
    series=(EXIT_IP_INFO, EXIT_IP_AIRVPN),
    render=render,
)
def check_exit_ip(ctx: Context) -> Outcome:
    cfg = ctx.config.checks.exit_ip
    try:
        resp = ctx.http_get(cfg.url, _BUDGET * cfg.timeout, MAX_BYTES)
    except SourceError as e:
        if e.kind == "bad_response":
            return Outcome.failed("bad_response", str(e))
        if e.kind == "tls":
            return Outcome.failed("tls", str(e))
        return Outcome.failed("unreachable", str(e))

    parsed = parse_whatismyip(resp.status, resp.headers.get("content-type", ""), resp.body)
    if isinstance(parsed, str):
        return Outcome.failed("bad_response", parsed)
    ip, airvpn, country = parsed

    facts = {"ip": str(ip), "country": country}
    observations = {} if airvpn is None else {"airvpn": 1.0 if airvpn else 0.0}
    kw = {"facts": facts, "observations": observations}
    allowed = {ipaddress.ip_address(a) for a in cfg.allowed_ips}

    if cfg.host_public_ip and ip == ipaddress.ip_address(cfg.host_public_ip):
        return Outcome.failed("leak", f"exit IP {ip} is the host's own public address", **kw)
    if ip in allowed:
        return Outcome.passed(f"exit IP {ip} is in allowed_ips", **kw)
    if cfg.require_airvpn:
        if airvpn is None:
            return Outcome.failed(
                "bad_response",
                "answer has no boolean 'airvpn' field"
                " (not AirVPN's endpoint? set require_airvpn = false)",
                **kw,
            )
        if airvpn:
            return Outcome.passed(f"exit IP {ip}{_in(country)} is AirVPN", **kw)
        also = " nor in allowed_ips" if allowed else ""
        return Outcome.failed("not_airvpn", f"exit IP {ip}{_in(country)} is not AirVPN{also}", **kw)
    if allowed:
        return Outcome.failed(
            "not_allowed", f"exit IP {ip}{_in(country)} is not in allowed_ips", **kw
        )
    return Outcome.passed(f"exit IP {ip}{_in(country)}", **kw)


def _in(country: str) -> str:
    return f" ({country})" if country else ""


def parse_whatismyip(
    status: int, content_type: str, body: bytes
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, bool | None, str] | str:
    """(ip, airvpn or None when absent, country or "") or a one-line reason it is unusable."""
    if status != 200:
        hint = " (rate limited?)" if status in (403, 429) else ""
        return f"exit-IP endpoint answered HTTP {status}{hint}"
    ctype = content_type.split(";", 1)[0].strip().lower() or "no content type"
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        if "json" in ctype:
            return f"exit-IP endpoint returned invalid JSON ({len(body)} bytes)"
        return f"exit-IP endpoint returned {ctype}, not JSON"
    if not isinstance(data, dict):
        return f"exit-IP endpoint returned a JSON {type(data).__name__}, not an object"
    result = data.get("result")
    if result is not None and str(result).lower() != "ok":
        return f"exit-IP endpoint reported result {str(result)[:40]!r}"
    raw_ip = data.get("ip")
    if not isinstance(raw_ip, str):
        return "exit-IP answer has no 'ip' string"
    try:
        ip = ipaddress.ip_address(raw_ip.strip())
    except ValueError:
        return f"exit-IP answer's 'ip' is not an IP address: {raw_ip[:46]!r}"
    airvpn = data.get("airvpn")
    if airvpn is not None and not isinstance(airvpn, bool):
        return f"exit-IP answer's 'airvpn' is not true/false: {str(airvpn)[:20]!r}"
    return ip, airvpn, _country(data)


def _country(data: dict) -> str:
    """Country name (else code) from ``geo`` or ``geo_additional``, "" when unknown."""
    for key in ("geo", "geo_additional"):
        geo = data.get(key)
        if not isinstance(geo, dict):
            continue
        for field in ("country_name", "name", "country", "country_code", "code"):
            v = geo.get(field)
            if isinstance(v, str) and v.strip():
                return v.strip()[:64]
    return ""
