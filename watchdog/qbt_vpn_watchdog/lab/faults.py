"""The injectable faults: each a named, reversible pair of small functions.

Server-side faults are nftables tables of their own in qvl-srv (one table per
fault, so healing one is deleting its table). Each applied fault is recorded in
the state directory so `status` lists it and `down`/`heal` undo it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from qbt_vpn_watchdog.lab import guard_faults as g  # the kill switch and forwarded-port faults
from qbt_vpn_watchdog.lab import procs, services, state
from qbt_vpn_watchdog.lab import topology as t
from qbt_vpn_watchdog.lab.fault_steps import (
    _delete_rules,
    _set_preference,
    break_ipv6,
    heal_ipv6,
    restart_tunnel,
)


@dataclass(frozen=True)
class Fault:
    name: str
    summary: str
    break_: Callable[[], None]
    heal: Callable[[], None]
    # The check and reasons that are this fault's own signature, as opposed to
    # side effects of breaking it (re-creating the tunnel trips the link
    # checks first). None: any failing check counts.
    signature: tuple[str, tuple[str, ...]] | None = None


def _table(name: str) -> str:
    return "qvl_fault_" + name.replace("-", "_")


def _drop_table(ns: str, name: str) -> None:
    if t.ns_exists(ns):
        t.run(["nft", "delete", "table", "inet", _table(name)], netns=ns, check=False)


# --- return-path: the 92-byte failure -------------------------------------------


def break_return_path() -> None:
    # The first handshake response (92 bytes of WireGuard, 120 at layer 3) gets
    # back; nothing after it. The client tunnel is restarted behind the rule so
    # its counters start from 0 and that one response is all it ever receives:
    # peer rx stays at 92 while tx climbs, exactly as in the 92-byte failure. qBittorrent
    # is then moved onto the new tunnel, so it keeps sending into it (the
    # failing box sent 3.51 GB) instead of sitting on sockets of the old one.
    t.confined("tunnel-down")
    t.nft(
        t.NS_SRV,
        f"""table inet {_table("return-path")}
delete table inet {_table("return-path")}
table inet {_table("return-path")} {{
  chain output {{
    type filter hook output priority filter; policy accept;
    udp sport {t.WG_PORT} quota until 120 bytes accept
    udp sport {t.WG_PORT} drop
  }}
}}
""",
    )
    t.confined("tunnel-up")
    services.rebind_client_qbt()


def heal_return_path() -> None:
    # The server still holds a valid session: once its packets flow again the
    # client receives them, no restart needed.
    _drop_table(t.NS_SRV, "return-path")


# --- blackhole: everything from the server dropped, mid-run ---------------------


def break_blackhole() -> None:
    t.nft(
        t.NS_SRV,
        f"""table inet {_table("blackhole")}
delete table inet {_table("blackhole")}
table inet {_table("blackhole")} {{
  chain output {{
    type filter hook output priority filter; policy accept;
    udp sport {t.WG_PORT} drop
  }}
}}
""",
    )


def heal_blackhole() -> None:
    _drop_table(t.NS_SRV, "blackhole")


# --- mtu: a path-MTU black hole between client and server ------------------------

# WireGuard adds 32 bytes to an inner packet (16 of header, 16 of tag) after
# padding it to a multiple of 16 (never past the tunnel's MTU), and the outer
# UDP/IPv4 headers add 28: a full-size inner packet of MTU 1320 is a 1380-byte
# outer packet. On a VPN link, outer packets above some size vanish without an
# ICMP "fragmentation needed" (or WireGuard ignores it): that is why AirVPN sets
# MTU 1320. Here outer packets above 1340 bytes are dropped, so the largest
# inner packet that still crosses is 1280 bytes (1280 + 60 = 1340; 1281 pads to
# 1296, 1356 outer): the tunnel must be set to MTU 1280, which the NixOS
# module accepts (IPv6 needs at least 1280). Handshakes (148/92), keepalives
# (32), DNS, pings and small HTTP all still pass; full-size TCP segments
# (1320 inner, 1380 outer) do not.
MTU_FAULT_OUTER_MAX = 1340
MTU_FAULT_INNER_MAX = 1280


def _mtu_rules(down: bool, up: bool) -> str:
    lines = []
    if down:  # server -> client: what downloads need
        lines.append(
            f"  chain output {{\n    type filter hook output priority filter; policy accept;\n"
            f"    udp sport {t.WG_PORT} ip length > {MTU_FAULT_OUTER_MAX} drop\n  }}"
        )
    if up:  # client -> server: what uploads need
        lines.append(
            f"  chain input {{\n    type filter hook input priority filter; policy accept;\n"
            f"    udp dport {t.WG_PORT} ip length > {MTU_FAULT_OUTER_MAX} drop\n  }}"
        )
    return "\n".join(lines)


def _break_mtu(name: str, down: bool, up: bool) -> None:
    table = _table(name)
    t.nft(
        t.NS_SRV,
        f"table inet {table}\ndelete table inet {table}\n"
        f"table inet {table} {{\n{_mtu_rules(down, up)}\n}}\n",
    )


def break_mtu() -> None:
    _break_mtu("mtu", down=True, up=True)


def heal_mtu() -> None:
    _drop_table(t.NS_SRV, "mtu")


def break_mtu_down() -> None:
    _break_mtu("mtu-down", down=True, up=False)


def heal_mtu_down() -> None:
    _drop_table(t.NS_SRV, "mtu-down")


def break_mtu_up() -> None:
    _break_mtu("mtu-up", down=False, up=True)


def heal_mtu_up() -> None:
    _drop_table(t.NS_SRV, "mtu-up")


# --- dns: the VPN's resolver stops answering, the tunnel still carries data ------


def break_dns() -> None:
    t.nft(
        t.NS_SRV,
        f"""table inet {_table("dns")}
delete table inet {_table("dns")}
table inet {_table("dns")} {{
  chain input {{
    type filter hook input priority filter; policy accept;
    ip daddr {t.SERVER_TUN_IP} meta l4proto {{ tcp, udp }} th dport 53 drop
  }}
}}
""",
    )


def heal_dns() -> None:
    _drop_table(t.NS_SRV, "dns")


# --- dns-leak: the namespace's resolver is one the tunnel does not carry ----------


def _resolv() -> str:
    return f"/etc/netns/{t.NS_VPN}/resolv.conf"


def break_dns_leak() -> None:
    # A resolver on the LAN side with a route out of the veth: queries would
    # leave outside the tunnel (the kill switch drops them here; the watchdog
    # must notice the route and the resolver, not wait for an answer).
    with open(_resolv()) as f:
        original = f.read()
    state.mark_fault("dns-leak", original)
    with open(_resolv(), "w") as f:
        f.write(f"# qvl lab fault dns-leak\nnameserver {t.LEAK_RESOLVER}\n")
    gw = t.LAN_HOST_ADDR.split("/")[0]
    t.run(
        [
            "ip",
            "-n",
            t.NS_VPN,
            "route",
            "replace",
            f"{t.LEAK_RESOLVER}/32",
            "via",
            gw,
            "dev",
            t.LAN_NS,
        ]
    )


def heal_dns_leak() -> None:
    original = state.fault_note("dns-leak") or f"nameserver {t.SERVER_TUN_IP}\n"
    if t.ns_exists(t.NS_VPN):
        with open(_resolv(), "w") as f:
            f.write(original)
        t.run(["ip", "-n", t.NS_VPN, "route", "del", f"{t.LEAK_RESOLVER}/32"], check=False)


# --- exit-ip: the endpoint reports a non-AirVPN exit -------------------------------


def break_exit_ip() -> None:
    services.EXIT_IP_FAULT_FILE.parent.mkdir(parents=True, exist_ok=True)
    services.EXIT_IP_FAULT_FILE.write_text(json.dumps({"ip": "198.18.9.9", "airvpn": False}))


def heal_exit_ip() -> None:
    # The marker file *is* the fault record; clear_fault removes it.
    pass


# --- bind: qBittorrent rebound to the LAN veth through its API ---------------------


def _set_interface(name: str) -> None:
    _set_preference("current_network_interface", name, current_interface_address="")


def break_bind() -> None:
    _set_interface(t.LAN_NS)


def heal_bind() -> None:
    if procs.running("client-qbt", "qbittorrent-nox"):
        _set_interface(t.WG_CLIENT)


# --- tunnel-down: the client's wireguard-go dies, its interface goes with it -------


def break_tunnel_down() -> None:
    import signal

    # A crash, not a clean stop: SIGKILL leaves the UAPI socket file behind.
    procs.stop("client-wg", "wireguard-go", sig=signal.SIGKILL)
    deadline = time.monotonic() + 5
    while t.link_exists(t.WG_CLIENT, t.NS_VPN) and time.monotonic() < deadline:
        time.sleep(0.05)


def heal_tunnel_down() -> None:
    # The tunnel back, as systemd's reload of the tunnel unit brings it, and
    # qBittorrent onto it (which that reload does not do: the watchdog's rebind
    # does, and the remediation tests leave it to the watchdog).
    if t.ns_exists(t.NS_VPN):
        restart_tunnel()
        services.rebind_client_qbt()


# --- webui-exposed: the WebUI reachable through the tunnel ---------------------------


def break_webui_exposed() -> None:
    # The server forwards its public addresses' port 8080 (exit and endpoint)
    # to the client (also for the client's own
    # connections to its exit address, hence the masquerade for the hairpin),
    # and the client's kill switch lets 8080 in on the tunnel.
    t.nft(
        t.NS_SRV,
        f"""table ip {_table("webui-exposed")}
delete table ip {_table("webui-exposed")}
table ip {_table("webui-exposed")} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat;
    ip daddr {{ {t.EXIT_IP}, {t.WAN_SERVER_ADDR.split("/")[0]} }} tcp dport {t.WEBUI_PORT} \
dnat to {t.CLIENT_TUN_IP}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat;
    oifname "{t.WG_SERVER}" ct status dnat tcp dport {t.WEBUI_PORT} masquerade
  }}
}}
""",
    )
    t.run(
        [
            "nft",
            "insert",
            "rule",
            "inet",
            t.KILLSWITCH_TABLE,
            "input",
            "iifname",
            t.WG_CLIENT,
            "tcp",
            "dport",
            str(t.WEBUI_PORT),
            "accept",
            "comment",
            '"qvl-fault-webui-exposed"',
        ],
        netns=t.NS_VPN,
    )


def heal_webui_exposed() -> None:
    if t.ns_exists(t.NS_SRV):
        t.run(
            ["nft", "delete", "table", "ip", _table("webui-exposed")], netns=t.NS_SRV, check=False
        )
    _delete_rules("input", "qvl-fault-webui-exposed")


# --- ipv6: IPv6 appears on the namespace's LAN side ------------------------------------


# --- qbt-down: qbittorrent-nox stops ---------------------------------------------------


def break_qbt_down() -> None:
    services.stop_client_qbt()


def heal_qbt_down() -> None:
    if t.ns_exists(t.NS_VPN):
        services.start_client_qbt()


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault(
            "return-path",
            "only the first handshake response comes back (the 92-byte failure)",
            break_return_path,
            heal_return_path,
            signature=("return_path", ("handshake_only", "no_return_traffic")),
        ),
        Fault(
            "blackhole",
            "everything from the VPN server is dropped",
            break_blackhole,
            heal_blackhole,
        ),
        Fault(
            "mtu",
            f"outer packets over {MTU_FAULT_OUTER_MAX} bytes are lost both ways "
            "(a path-MTU black hole)",
            break_mtu,
            heal_mtu,
        ),
        Fault(
            "mtu-down",
            f"outer packets over {MTU_FAULT_OUTER_MAX} bytes from the server are lost "
            "(downloads stall)",
            break_mtu_down,
            heal_mtu_down,
        ),
        Fault(
            "mtu-up",
            f"outer packets over {MTU_FAULT_OUTER_MAX} bytes to the server are lost "
            "(uploads stall)",
            break_mtu_up,
            heal_mtu_up,
        ),
        Fault("dns", "the VPN's resolver stops answering", break_dns, heal_dns),
        Fault(
            "dns-leak",
            "the namespace resolver is reached outside the tunnel",
            break_dns_leak,
            heal_dns_leak,
        ),
        Fault(
            "exit-ip", "the exit-IP endpoint reports a non-AirVPN exit", break_exit_ip, heal_exit_ip
        ),
        Fault("bind", "qBittorrent rebound to the LAN veth", break_bind, heal_bind),
        Fault(
            "tunnel-down",
            "the client's wireguard-go is killed",
            break_tunnel_down,
            heal_tunnel_down,
        ),
        Fault(
            "webui-exposed",
            "the WebUI is reachable through the tunnel",
            break_webui_exposed,
            heal_webui_exposed,
        ),
        Fault(
            "ipv6",
            "an IPv6 address and default route appear on the namespace's LAN side",
            break_ipv6,
            heal_ipv6,
        ),
        Fault("qbt-down", "qbittorrent-nox is stopped", break_qbt_down, heal_qbt_down),
        Fault(
            "killswitch",
            "the confined namespace's kill switch table is removed",
            g.break_killswitch,
            g.heal_killswitch,
            signature=("killswitch", ("missing",)),
        ),
        Fault(
            "killswitch-open",
            "the kill switch stays, one rule accepts output on the LAN veth to any address",
            g.break_killswitch_open,
            g.heal_killswitch_open,
            signature=("killswitch", ("lan_open",)),
        ),
        Fault(
            "ipv6-open",
            "IPv6 on the namespace's LAN side, and the kill switch lets IPv6 out there",
            g.break_ipv6_open,
            g.heal_ipv6_open,
            signature=("ipv6", ("route_outside",)),
        ),
        Fault(
            "port-closed",
            "the VPN server no longer forwards the forwarded port",
            g.break_port_closed,
            g.heal_port_closed,
            signature=("port_forward", ("closed",)),
        ),
        Fault(
            "port-moved",
            f"qBittorrent listens on port {g.MOVED_PORT}, not the forwarded {t.FORWARDED_PORT}",
            g.break_port_moved,
            g.heal_port_moved,
            signature=("port_forward", ("closed",)),
        ),
    )
}


class UnknownFault(t.LabError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")


def break_fault(name: str) -> None:
    f = FAULTS.get(name)
    if f is None:
        raise UnknownFault(name)
    if name in state.applied_faults():
        return
    if name != "dns-leak":  # dns-leak records its own note (the original resolv.conf)
        state.mark_fault(name)
    try:
        f.break_()
    except Exception:
        f.heal()
        state.clear_fault(name)
        raise


def heal_fault(name: str | None = None) -> list[str]:
    """Heal one fault, or every applied one; returns what was healed."""
    if name is not None and name not in FAULTS:
        raise UnknownFault(name)
    names = [name] if name else state.applied_faults()
    healed = []
    for n in names:
        if n in FAULTS and n in state.applied_faults():
            FAULTS[n].heal()
            healed.append(n)
        state.clear_fault(n)
    return healed
