"""bind: qBittorrent is bound to the tunnel interface, which exists and has an address.

Bound to "any interface", qBittorrent sends through whatever route exists the
moment the tunnel goes away: that is the leak this check is for. Its own
connection status does not tell: with the tunnel interface deleted, 4.5 keeps
saying ``firewalled`` (LAB-NOTES). The useful signal is that the interface it
is bound to has no address in qBittorrent's own view
(``app/networkInterfaceAddressList``), cross-checked with the tunnel link read
by rtnetlink in the namespace: if the two disagree, qBittorrent is looking at
another interface of that name (e.g. it runs outside the namespace).

Reasons, in the order they are tested:
  login, unreachable, bad_response   qBittorrent's Web API could not be read
  unbound          bound to any interface
  wrong_interface  bound to another interface, or to one the tunnel is not
  no_address       the interface is missing or has no address
  wrong_address    bound to an address (Session\\InterfaceAddress) the tunnel does not have
  wrong_port       a forwarded port is configured and qBittorrent listens elsewhere
  not_listening    nothing listens on qBittorrent's port in the namespace
  stale_listener   the socket listening on that port is bound to a device that is
                   no longer the tunnel (index 3 while the tunnel is now index 6)

The last two read the namespace's listening sockets (sock_diag, what `ss`
shows), because qBittorrent's preferences cannot tell: when the tunnel is
re-created (the unit's reload, our tier-2 restart), qBittorrent 4.5 /
libtorrent 2.0 often keeps its socket bound to the old interface's index. Its
settings still say "wg0", the new wg0 has the address, and not one peer
connection can be made: a silent stall, measured in the lab. Setting the same
preferences again changes nothing (libtorrent compares device *names*); the
watchdog's rebind moves the listen port away and back, which opens new sockets.
"""

from __future__ import annotations

from qbt_vpn_watchdog.checks import Context, degraded, register, unknown, unsafe
from qbt_vpn_watchdog.results import UNKNOWN, UNSAFE, Outcome
from qbt_vpn_watchdog.sources import LinkState, Listener, QbtState, SourceError
from qbt_vpn_watchdog.sources.tunnel import ip_of, on_tunnel, routable

# qBittorrent unreachable moves no traffic: unknown (blocks resuming, never starts a hold).
# The socket problems (not_listening, stale_listener) cannot leak: nothing is
# listening, or the socket is bound to a device that no longer exists. They
# stall everything, and the remedy is the rebind, not a hold; so is a port
# that is not the forwarded one. The interface without an address is the
# tunnel gone: a restart brings it back.
REASONS = (
    unknown("login"),
    unknown("password_file"),
    unknown("unreachable"),
    unknown("bad_response"),
    unsafe("unbound", rebind=True),
    unsafe("wrong_interface", rebind=True),
    unsafe("no_address", restart=True),
    unsafe("wrong_address"),
    degraded("wrong_port", rebind=True),
    degraded("not_listening", rebind=True),
    degraded("stale_listener", rebind=True),
)


def source_reason(e: SourceError) -> str:
    """The reason for a failure to read qBittorrent (shared with the webui check)."""
    if e.kind in ("login", "password_file"):
        return e.kind
    if e.kind == "bad_response":
        return "bad_response"
    return "unreachable"


def observations(s: QbtState) -> dict[str, float]:
    return {
        "listen_port": float(s.listen_port),
        "dht_nodes": float(s.dht_nodes),
        "interface_addresses": float(len(routable(s.interface_addresses))),
    }


@register(
    "bind",
    order=50,
    summary="qBittorrent is bound to the tunnel interface and port",
    reasons=REASONS,
    errors=UNSAFE,  # fail closed: it guards where torrent traffic goes
    # ...but its timeout is qBittorrent's WebUI not answering in time (a hung or busy
    # qBittorrent moves no traffic): unknown, like `unreachable`, never a hold.
    timeouts=UNKNOWN,
    on_link_event=True,
)
def check(ctx: Context) -> Outcome:
    want = ctx.config.wireguard.interface
    forwarded = ctx.config.qbittorrent.forwarded_port
    try:
        s = ctx.qbittorrent()
    except SourceError as e:
        return Outcome.failed(source_reason(e), str(e))
    obs = observations(s)
    qbt_addrs = routable(s.interface_addresses)
    first = sorted(qbt_addrs, key=lambda ip: (ip.version, int(ip)))
    address = s.interface_address or (str(first[0]) if first else "")
    kw = {"observations": obs, "facts": {"interface": s.interface_name, "address": address}}

    if not s.interface_name:
        return Outcome.failed(
            "unbound",
            f"qBittorrent is bound to any interface, not {want}: "
            "its traffic can leave outside the tunnel",
            **kw,
        )
    if s.interface_name != want:
        return Outcome.failed(
            "wrong_interface", f"qBittorrent is bound to {s.interface_name}, not {want}", **kw
        )

    link: LinkState | None
    try:
        link = ctx.tunnel_link()
        link_problem = f"{want} does not exist in the namespace"
    except SourceError as e:
        link, link_problem = None, f"cannot read {want}: {e}"
    if not qbt_addrs:
        why = "the tunnel is down or gone" if link is None else "qBittorrent cannot use it"
        return Outcome.failed(
            "no_address", f"{want}, which qBittorrent is bound to, has no address ({why})", **kw
        )
    if link is None:
        return Outcome.failed("no_address", link_problem, **kw)
    link_addrs = routable(link.addresses)
    if not link_addrs:
        return Outcome.failed("no_address", f"{want} has no address in the namespace", **kw)
    if not (qbt_addrs & link_addrs):
        return Outcome.failed(
            "wrong_interface",
            f"qBittorrent's {want} has {_show(qbt_addrs)}, the tunnel has {_show(link_addrs)}: "
            "not the same interface (is qBittorrent outside the namespace?)",
            **kw,
        )
    if s.interface_address:
        ip = ip_of(s.interface_address)
        if ip is None or ip not in link_addrs:
            return Outcome.failed(
                "wrong_address",
                f"qBittorrent is bound to address {s.interface_address}, "
                f"which {want} does not have ({_show(link_addrs)})",
                **kw,
            )
    if forwarded and s.listen_port != forwarded:
        return Outcome.failed(
            "wrong_port",
            f"qBittorrent listens on port {s.listen_port}, not the forwarded port {forwarded}",
            **kw,
        )
    passed = f"bound to {want} ({address}), port {s.listen_port}"
    try:
        listeners = ctx.tcp_listeners(s.listen_port)
    except SourceError as e:
        # Not evidence of a stall, and the rest of the binding is proven: pass,
        # saying what could not be read.
        return Outcome.passed(f"{passed}; listening sockets not checked: {e}", **kw)
    problem = _listener_problem(listeners, s.listen_port, link)
    if problem is not None:
        return Outcome.failed(*problem, **kw)
    return Outcome.passed(passed, **kw)


def _listener_problem(
    listeners: tuple[Listener, ...], port: int, link: LinkState
) -> tuple[str, str] | None:
    """(reason, detail) when no socket on ``port`` is bound to the tunnel as it is now."""
    if on_tunnel(listeners, link):
        return None
    useful = [x for x in listeners if (ip := ip_of(x.address)) is None or not ip.is_link_local]
    if not useful:
        return (
            "not_listening",
            f"nothing listens on port {port} in the namespace: qBittorrent can make no peer "
            f"connection (its listen socket on {link.name} is gone)",
        )
    shown = ", ".join(str(x) for x in useful)
    return (
        "stale_listener",
        f"port {port} is held by {shown}, but {link.name} is interface index {link.index} now: "
        "the tunnel was re-created and qBittorrent's sockets are bound to the old one "
        "(no peer connection can be made)",
    )


def _show(addrs) -> str:
    return ", ".join(str(a) for a in sorted(addrs, key=lambda ip: (ip.version, int(ip))))
