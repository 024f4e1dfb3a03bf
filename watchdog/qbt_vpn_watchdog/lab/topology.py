"""The lab's namespaces, links, addresses and routes, and the shell helpers they need.

    root ──qvll0══qvll1── qvl-vpn (confined: qvlc0 tunnel, qBittorrent, kill switch)
                              ┆ qvlc0 was created in qvl-wan; its UDP socket stays there
    qvl-wan ──qvlw0══qvlw1── qvl-srv (AirVPN-like server: qvls0, dnsmasq on 10.128.0.1, NAT)
                                  └─qvli0══qvli1── qvl-inet ("the internet": exit-IP
                                                   endpoint, seeder + tracker)

The confined side has a shape (`Shape`, chosen at `lab up --shape NAME` and
kept in the state directory for every later command): "own", the layout above
that watchdog/vpn-netns.sh builds on a host of ours, or "vpn-confinement", the
layout VPN-Confinement (github.com/Maroka-chan/VPN-Confinement) builds
(lab/vpn_confinement.py): the same outer namespaces, another confined one.

Every lab prefix lives in 198.18.0.0/15 (the benchmarking range) or in the
tunnel range, and the root namespace gets blackhole routes for both before
anything starts: a stray connect from the root namespace can never leave the
machine. Only the LAN /30 is on-link in the root namespace (more specific than
the blackhole), because that is how the LAN reaches the WebUI.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from qbt_vpn_watchdog.lab.state import LOG_DIR, PID_DIR, STATE_DIR, WG_DIR

# Namespaces. The confined one plays the host's "vpn" namespace.
NS_VPN = "qvl-vpn"
NS_WAN = "qvl-wan"
NS_SRV = "qvl-srv"
NS_INET = "qvl-inet"
NAMESPACES = (NS_VPN, NS_WAN, NS_SRV, NS_INET)

# WireGuard interfaces: names are global (wireguard-go's UAPI socket path).
WG_CLIENT = "qvlc0"
WG_SERVER = "qvls0"
WG_PORT = 1637  # AirVPN's

# veth pairs (first name, second name)
LAN_HOST, LAN_NS = "qvll0", "qvll1"  # root <-> qvl-vpn
WAN_CLIENT_IF, WAN_SERVER_IF = "qvlw0", "qvlw1"  # qvl-wan <-> qvl-srv
INET_SERVER_IF, INET_HOST_IF = "qvli0", "qvli1"  # qvl-srv <-> qvl-inet
_OUTER_LINKS = (WAN_CLIENT_IF, WAN_SERVER_IF, INET_SERVER_IF, INET_HOST_IF)
LINKS = (LAN_HOST, LAN_NS, *_OUTER_LINKS, WG_CLIENT, WG_SERVER)

# Addresses
WAN_CLIENT_ADDR = "198.18.0.2/30"
WAN_SERVER_ADDR = "198.18.0.1/30"
ENDPOINT = f"198.18.0.1:{WG_PORT}"
EXIT_IP = "198.18.1.1"  # the VPN server's "public" address: NAT source of the tunnel
INET_PREFIX = 24
WHATISMYIP_IP = "198.18.1.10"
SEEDER_IP = "198.18.1.20"
TUNNEL_NET = "10.128.0.0/24"
SERVER_TUN_IP = "10.128.0.1"  # also the VPN's resolver, as on AirVPN
CLIENT_TUN_IP = "10.128.0.42"
LAN_HOST_ADDR = "198.19.77.1/30"
LAN_NS_ADDR = "198.19.77.2/30"
LAN_NS_IP = "198.19.77.2"
# Stand-in for Tailscale's 100.64.0.0/10: another range allowed to the WebUI.
LAN_RANGES = ("198.19.77.0/30", "198.19.200.0/24")
LEAK_RESOLVER = "198.19.88.53"  # dns-leak: a resolver reached through the LAN veth
# ipv6: an address and a router on the LAN side of the confined namespace (ULA,
# fd00::/8). Nothing answers at the router's address: the root namespace's end
# of the veth gets no IPv6 address, so no packet can follow that route anywhere.
LAN6_PREFIX = "fd51:7a6c::/32"
LAN6_NS_ADDR = "fd51:7a6c:1::2/64"
LAN6_ROUTER = "fd51:7a6c:1::1"

BLACKHOLES = ("198.18.0.0/15", TUNNEL_NET, LAN6_PREFIX)
# Addresses the safety test probes from the root namespace (all must be blackholed).
LAB_ADDRESSES = (
    "198.18.0.1",
    "198.18.0.2",
    EXIT_IP,
    WHATISMYIP_IP,
    SEEDER_IP,
    SERVER_TUN_IP,
    CLIENT_TUN_IP,
    LEAK_RESOLVER,
    "198.19.200.1",
    LAN6_ROUTER,
)

WEBUI_PORT = 8080
FORWARDED_PORT = 47123
SEEDER_PORT = 6881
TRACKER_PORT = 9000
METRICS_PORT = 19879
MTU = 1320
KILLSWITCH_TABLE = "qvl_killswitch"
SRV_NAT_TABLE = "qvl_nat"


# AirVPN's static port forward, on the AirVPN-like server: the exit address's
# forwarded port to the client's tunnel address (the port_forward check's path;
# the port-closed fault removes it).
FORWARD_RULE = (
    f'iifname "{INET_SERVER_IF}" ip daddr {EXIT_IP} meta l4proto {{ tcp, udp }} '
    f"th dport {FORWARDED_PORT} dnat to {CLIENT_TUN_IP}"
)


class LabError(Exception):
    pass


# --- the confined side's shape ------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """What differs between confined sides: names, addresses, who builds them.

    The outer namespaces, the server, the "internet" and every fault are shared;
    the module names above (NS_VPN, WG_CLIENT, LAN_HOST, ...) always hold the
    selected shape's values, so the rest of the lab reads them as before.
    """

    name: str
    ns_vpn: str
    wg_client: str
    lan_host: str  # the root namespace's end of the veth (in `bridge` when there is one)
    lan_ns: str
    lan_host_addr: str  # on the bridge when there is one, else on lan_host
    lan_ns_addr: str
    lan_ranges: tuple[str, ...]  # VPN-Confinement: accessibleFrom
    bridge: str | None = None
    lan6_host_addr: str | None = None  # a ULA on the LAN side, when the shape has one
    lan6_ns_addr: str | None = None
    # Restarting the tunnel restarts the confined qBittorrent too (VPN-Confinement:
    # `systemctl restart <name>.service` rebuilds the namespace; BindsTo= restarts
    # every unit confined in it).
    restart_restarts_qbittorrent: bool = False
    # What a host runs for tier 2, shown in docs and status.
    host_restart: str = "systemctl reload-or-restart qbittorrent-vpn-tunnel.service"
    # namespace.built_by_vpn_netns: true only where vpn-netns.sh builds the namespace
    # (a restart re-installs its kill switch); another module's, as on its real host, false.
    built_by_vpn_netns: bool = True


OWN = Shape(
    name="own",
    ns_vpn="qvl-vpn",
    wg_client="qvlc0",
    lan_host="qvll0",
    lan_ns="qvll1",
    lan_host_addr="198.19.77.1/30",
    lan_ns_addr="198.19.77.2/30",
    lan_ranges=("198.19.77.0/30", "198.19.200.0/24"),
)
# VPN-Confinement's names for a namespace called "qvl-vc" (at most 7 characters,
# as it requires): <name>0, <name>-br, veth-<name>-br / veth-<name>, and its
# default addresses, the ULA pair included.
VPN_CONFINEMENT = Shape(
    name="vpn-confinement",
    ns_vpn="qvl-vc",
    wg_client="qvl-vc0",
    lan_host="veth-qvl-vc-br",
    lan_ns="veth-qvl-vc",
    lan_host_addr="192.168.15.5/24",  # bridgeAddress
    lan_ns_addr="192.168.15.1/24",  # namespaceAddress
    lan_ranges=("198.19.200.0/24",),
    bridge="qvl-vc-br",
    lan6_host_addr="fd93:9701:1d00::1/64",  # bridgeAddressIPv6
    lan6_ns_addr="fd93:9701:1d00::2/64",  # namespaceAddressIPv6
    restart_restarts_qbittorrent=True,
    host_restart="systemctl restart <name>.service",
    built_by_vpn_netns=False,
)
SHAPES = {s.name: s for s in (OWN, VPN_CONFINEMENT)}
SHAPE_FILE = STATE_DIR / "shape"
SHAPE = OWN


def select(shape: Shape | str) -> Shape:
    """Make ``shape`` the lab's confined side in this process (the module names follow)."""
    global SHAPE, NS_VPN, WG_CLIENT, LAN_HOST, LAN_NS, LAN_HOST_ADDR, LAN_NS_ADDR, LAN_NS_IP
    global LAN_RANGES, NAMESPACES, LINKS
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise LabError(f"unknown lab shape {shape!r} (known: {', '.join(SHAPES)})")
        shape = SHAPES[shape]
    SHAPE = shape
    NS_VPN, WG_CLIENT = shape.ns_vpn, shape.wg_client
    LAN_HOST, LAN_NS = shape.lan_host, shape.lan_ns
    LAN_HOST_ADDR, LAN_NS_ADDR = shape.lan_host_addr, shape.lan_ns_addr
    LAN_NS_IP = shape.lan_ns_addr.split("/")[0]
    LAN_RANGES = shape.lan_ranges
    NAMESPACES = (NS_VPN, NS_WAN, NS_SRV, NS_INET)
    LINKS = (LAN_HOST, LAN_NS, *_OUTER_LINKS, WG_CLIENT, WG_SERVER)
    return shape


def remember_shape() -> None:
    """Keep the selected shape for every later command (heal, restart-tunnel, down)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    SHAPE_FILE.write_text(SHAPE.name + "\n")


def _recall_shape() -> None:
    try:
        name = SHAPE_FILE.read_text().strip()
    except OSError:
        return
    if name in SHAPES:
        select(name)


def run(
    argv: list[str], *, netns: str | None = None, input: str | None = None, check: bool = True
) -> str:
    full = ["ip", "netns", "exec", netns, *argv] if netns else argv
    p = subprocess.run(full, input=input, capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise LabError(
            f"{' '.join(full)} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}"
        )
    return p.stdout


def nft(netns: str, text: str) -> None:
    run(["nft", "-f", "-"], netns=netns, input=text)


def ns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def link_exists(name: str, netns: str | None = None) -> bool:
    argv = ["ip", *(["-n", netns] if netns else []), "link", "show", "dev", name]
    return subprocess.run(argv, capture_output=True).returncode == 0


# --- the shared bring-up script -------------------------------------------------


def script_path() -> Path:
    return Path(str(resources.files("qbt_vpn_watchdog").joinpath("vpn-netns.sh")))


def client_conf() -> Path:
    return WG_DIR / "client.conf"


def client_key() -> Path:
    return WG_DIR / "client.key"


def script_argv(command: str) -> list[str]:
    """The confined side exactly as the host runs it, with wireguard-go instead of the kernel."""
    return [
        "bash",
        str(script_path()),
        "--netns",
        NS_VPN,
        "--interface",
        WG_CLIENT,
        "--config",
        str(client_conf()),
        "--private-key-file",
        str(client_key()),
        "--wan-netns",
        NS_WAN,
        "--userspace",
        "wireguard-go",
        "--pidfile",
        str(PID_DIR / "client-wg.pid"),
        "--log",
        str(LOG_DIR / "client-wg.log"),
        "--lan-veth",
        f"{LAN_HOST}:{LAN_NS}",
        "--lan-host-addr",
        LAN_HOST_ADDR,
        "--lan-ns-addr",
        LAN_NS_ADDR,
        "--lan-ranges",
        ",".join(LAN_RANGES),
        "--webui-port",
        str(WEBUI_PORT),
        "--forwarded-port",
        str(FORWARDED_PORT),
        "--nft-table",
        KILLSWITCH_TABLE,
        command,
    ]


# Shapes whose confined side is built in Python rather than by vpn-netns.sh
# register here (lab/vpn_confinement.py; control imports it), so that this
# module imports none of them.
BUILDERS: dict[str, Callable[[str], str]] = {}


def confined(command: str) -> str:
    """up, down, tunnel-up, tunnel-down or restart-tunnel of the selected shape's confined side."""
    if SHAPE.name in BUILDERS:
        return BUILDERS[SHAPE.name](command)
    if SHAPE is not OWN:
        raise LabError(f"no builder for the lab shape {SHAPE.name} (import its module)")
    return run(script_argv(command))


def confined_present() -> bool:
    return (
        ns_exists(NS_VPN)
        or link_exists(LAN_HOST)
        or bool(SHAPE.bridge and link_exists(SHAPE.bridge))
    )


# --- safety: blackholes ---------------------------------------------------------


def blackholes_up() -> None:
    for prefix in BLACKHOLES:
        run(["ip", "route", "replace", "blackhole", prefix])


def blackholes_down() -> None:
    for prefix in BLACKHOLES:
        run(["ip", "route", "del", "blackhole", prefix], check=False)


def blackholes_present() -> list[str]:
    out = run(["ip", "route", "show", "type", "blackhole"], check=False)
    out += run(["ip", "-6", "route", "show", "type", "blackhole"], check=False)
    return [p for p in BLACKHOLES if any(line.split()[1:2] == [p] for line in out.splitlines())]


# --- the outer namespaces ------------------------------------------------------


def _ns(name: str) -> None:
    if not ns_exists(name):
        run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def _veth(a: str, ns_a: str, addr_a: str, b: str, ns_b: str, addrs_b: list[str]) -> None:
    if not link_exists(a, ns_a):
        run(["ip", "-n", ns_a, "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b])
    run(["ip", "-n", ns_a, "addr", "replace", addr_a, "dev", a])
    run(["ip", "-n", ns_a, "link", "set", a, "up"])
    for addr in addrs_b:
        run(["ip", "-n", ns_b, "addr", "replace", addr, "dev", b])
    run(["ip", "-n", ns_b, "link", "set", b, "up"])


def outer_up() -> None:
    """qvl-wan, qvl-srv, qvl-inet and their links. No link reaches the root namespace."""
    for name in (NS_WAN, NS_SRV, NS_INET):
        _ns(name)
    _veth(WAN_CLIENT_IF, NS_WAN, WAN_CLIENT_ADDR, WAN_SERVER_IF, NS_SRV, [WAN_SERVER_ADDR])
    _veth(
        INET_SERVER_IF,
        NS_SRV,
        f"{EXIT_IP}/{INET_PREFIX}",
        INET_HOST_IF,
        NS_INET,
        [f"{WHATISMYIP_IP}/{INET_PREFIX}", f"{SEEDER_IP}/{INET_PREFIX}"],
    )
    # Only the VPN server forwards (tunnel <-> "internet"); its sysctl is per namespace.
    run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], netns=NS_SRV)
    # The tunnel range leaves the server NATed to the exit address, like AirVPN;
    # the forwarded port comes back in to the client's tunnel address.
    forward = FORWARD_RULE
    nft(
        NS_SRV,
        f"""table ip {SRV_NAT_TABLE}
delete table ip {SRV_NAT_TABLE}
table ip {SRV_NAT_TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat;
    {forward}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat;
    oifname "{INET_SERVER_IF}" ip saddr {TUNNEL_NET} snat to {EXIT_IP}
  }}
}}
""",
    )


def namespaces_down() -> None:
    for name in NAMESPACES:
        if ns_exists(name):
            run(["ip", "netns", "del", name], check=False)
    # veths die with their namespace; the root end of the LAN pair goes with its peer.
    if link_exists(LAN_HOST):
        run(["ip", "link", "del", LAN_HOST], check=False)
    for name in NAMESPACES:
        run(["rm", "-rf", f"/etc/netns/{name}"], check=False)


_recall_shape()
