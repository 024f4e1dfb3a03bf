"""The guards' lab faults: the kill switch removed or loosened, IPv6 let out, and the
forwarded port closed on the server or moved in qBittorrent (registered in faults.FAULTS)."""

from __future__ import annotations

from qbt_vpn_watchdog.lab import procs, services
from qbt_vpn_watchdog.lab import topology as t
from qbt_vpn_watchdog.lab.fault_steps import (
    _delete_rules,
    _set_preference,
    break_ipv6,
    heal_ipv6,
    restart_tunnel,
)

# --- killswitch: the confined namespace's kill switch removed ------------------------


def break_killswitch() -> None:
    # `nft flush ruleset` inside the namespace, as tried by hand in #20: every
    # other check stays ok, nothing leaks until the next route change.
    t.run(["nft", "delete", "table", "inet", t.KILLSWITCH_TABLE], netns=t.NS_VPN)


def heal_killswitch() -> None:
    # What the tunnel's restart does (vpn-netns.sh restart-tunnel re-installs it),
    # without re-creating the tunnel: the script's kill switch alone.
    if t.ns_exists(t.NS_VPN):
        restart_tunnel()
        services.rebind_client_qbt()


# --- killswitch-open: the table kept, one rule lets anything out of the LAN veth ---

_OPEN_COMMENT = "qvl-fault-killswitch-open"


def _insert_output_rule(*match: str, comment: str) -> None:
    t.run(
        ["nft", "insert", "rule", "inet", t.KILLSWITCH_TABLE, "output", *match, "accept",
         "comment", f'"{comment}"'],
        netns=t.NS_VPN,
    )  # fmt: skip


def break_killswitch_open() -> None:
    # A rule someone adds "for the LAN": output on the veth to any address.
    _insert_output_rule("oifname", t.LAN_NS, comment=_OPEN_COMMENT)


def heal_killswitch_open() -> None:
    _delete_rules("output", _OPEN_COMMENT)


# --- ipv6-open: IPv6 on the LAN side, and the kill switch lets it out ----------------

_IPV6_OPEN_COMMENT = "qvl-fault-ipv6-open"


def break_ipv6_open() -> None:
    # The ipv6 fault with a kill switch that handles IPv4 only (as some
    # hand-written ones do): now IPv6 can really leave beside the tunnel.
    break_ipv6()
    _insert_output_rule("oifname", t.LAN_NS, "meta", "nfproto", "ipv6", comment=_IPV6_OPEN_COMMENT)


def heal_ipv6_open() -> None:
    _delete_rules("output", _IPV6_OPEN_COMMENT)
    heal_ipv6()


# --- port-closed / port-moved: the forwarded port stops answering from outside -------


def break_port_closed() -> None:
    # The forward removed on the AirVPN-like server (a reservation deleted in
    # the client area, or moved to another server).
    out = t.run(["nft", "-a", "list", "chain", "ip", t.SRV_NAT_TABLE, "prerouting"], netns=t.NS_SRV)
    for line in out.splitlines():
        if "dnat to" in line and "# handle " in line:
            handle = line.rsplit("# handle ", 1)[1].strip()
            t.run(
                ["nft", "delete", "rule", "ip", t.SRV_NAT_TABLE, "prerouting", "handle", handle],
                netns=t.NS_SRV,
            )


def heal_port_closed() -> None:
    if not t.ns_exists(t.NS_SRV):
        return
    out = t.run(["nft", "list", "chain", "ip", t.SRV_NAT_TABLE, "prerouting"], netns=t.NS_SRV)
    if "dnat to" not in out:
        t.run(
            ["nft", "add", "rule", "ip", t.SRV_NAT_TABLE, "prerouting", *t.FORWARD_RULE.split()],
            netns=t.NS_SRV,
        )


MOVED_PORT = t.FORWARDED_PORT + 1


def break_port_moved() -> None:
    # qBittorrent listens on another port than the one AirVPN forwards (a
    # port changed in its settings, a profile restored from elsewhere).
    _set_preference("listen_port", MOVED_PORT)


def heal_port_moved() -> None:
    if procs.running("client-qbt", "qbittorrent-nox"):
        _set_preference("listen_port", t.FORWARDED_PORT)
