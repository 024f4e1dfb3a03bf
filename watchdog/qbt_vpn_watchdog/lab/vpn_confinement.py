"""The lab's confined side shaped as VPN-Confinement builds it (shape "vpn-confinement").

VPN-Confinement (github.com/Maroka-chan/VPN-Confinement, modules/vpn-up.nix and
vpn-down.nix) makes, for `vpnNamespaces.<name>`: the namespace <name>; the
WireGuard interface <name>0 created outside and moved in; its Address and DNS
(/etc/netns/<name>/resolv.conf); a bridge <name>-br in the root namespace with
bridgeAddress (192.168.15.5/24, fd93:9701:1d00::1/64) and the veth pair
veth-<name>-br (in the bridge) / veth-<name> (namespaceAddress 192.168.15.1/24,
fd93:9701:1d00::2/64); default routes (IPv4 and IPv6) through the tunnel;
accessibleFrom routed back through the bridge; port 53 policy-routed into table
51820 (the tunnel only); and its firewall, written with iptables. Here the same
rules are loaded as iptables-nft stores them (tables ip/ip6 "filter", chains
INPUT, FORWARD, OUTPUT, dns-fw, dns-leak), in the same order:

  INPUT    policy drop: lo, ct invalid drop, ct established/related, (IPv6: icmpv6),
           the portMappings' `to` ports on the veth (the WebUI), the openVPNPorts
           (the forwarded port) on <name>0
  FORWARD  policy drop
  OUTPUT   policy accept: port 53 out of the veth -> dns-leak (log, drop); UDP 53 ->
           dns-fw (the configured resolvers only); the kill switch: out of the veth
           only established/related, new connections dropped

Differences, each forced by the lab: wireguard-go instead of the kernel's
WireGuard, created in qvl-wan rather than the root namespace (the root namespace
never talks to the lab's server: LAB-NOTES, SAFETY); no DNAT in the root
namespace for portMappings (the watchdog reaches namespaceAddress over the
bridge, as VPN-Confinement's README shows with curl); no endpoint ping before
`wg setconf`. `restart-tunnel` is what `systemctl restart <name>.service` does:
everything down, everything up, and the confined qBittorrent stopped before and
started after, as BindsTo= does on the host. `tunnel-up`/`tunnel-down` (only the WireGuard
link) exist for the faults; VPN-Confinement itself has no such step.
"""

from __future__ import annotations

import os
import tempfile
import time

from qbt_vpn_watchdog.lab import procs
from qbt_vpn_watchdog.lab import topology as t

DNS_TABLE = "51820"  # VPN-Confinement's routing table for port 53
# The ports VPN-Confinement's options would carry in the lab.
PORT_MAPPINGS = (t.WEBUI_PORT,)  # portMappings[].to, TCP
OPEN_VPN_PORTS = (t.FORWARDED_PORT,)  # openVPNPorts[].port, protocol "both"


def _shape() -> t.Shape:
    if t.SHAPE.name != "vpn-confinement":
        raise t.LabError(f"the lab's shape is {t.SHAPE.name}, not vpn-confinement")
    return t.SHAPE


def _ip(*argv: str, check: bool = True) -> str:
    return t.run(["ip", *argv], check=check)


def _nsip(*argv: str, check: bool = True) -> str:
    return t.run(["ip", "-n", t.NS_VPN, *argv], check=check)


def _conf() -> dict[str, list[str]]:
    """Address, DNS, MTU of the client config's [Interface] (what vpn-up.nix reads)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in t.client_conf().read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("["):
            section = line.lower()
        elif "=" in line and section == "[interface]":
            k, v = (x.strip() for x in line.split("=", 1))
            out.setdefault(k.lower(), []).extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _refuse_a_taken_prefix(shape: t.Shape) -> None:
    """The bridge's on-link prefixes must be free on this machine (a real LAN could use them)."""
    for addr in (shape.lan_host_addr, shape.lan6_host_addr):
        if not addr:
            continue
        family = "-6" if ":" in addr else "-4"
        ip = addr.split("/")[0]
        route = _ip(family, "route", "show", "match", ip, check=False).splitlines()
        taken = [r for r in route if not r.startswith("default") and shape.bridge not in r.split()]
        if taken:
            raise t.LabError(
                f"{addr.split('/')[0]}: this machine already routes it ({taken[0]}); "
                "the vpn-confinement lab shape uses VPN-Confinement's default addresses "
                "and will not shadow a real network"
            )


# --- the firewall, as iptables-nft holds VPN-Confinement's rules ------------------


def firewall_rules(family: str, dns: list[str]) -> str:
    """One family's table ("ip" or "ip6"), VPN-Confinement's rules in their order."""
    shape = _shape()
    wg, veth = shape.wg_client, shape.lan_ns
    addr = "ip6" if family == "ip6" else "ip"
    own_dns = [d for d in dns if (":" in d) == (family == "ip6")]
    dns_accept = "".join(f"    {addr} daddr {d} meta l4proto udp accept\n" for d in own_dns)
    icmp6 = "    meta l4proto ipv6-icmp accept\n" if family == "ip6" else ""
    webui = "".join(f'    iifname "{veth}" tcp dport {p} accept\n' for p in PORT_MAPPINGS)
    forwarded = "".join(
        f'    iifname "{wg}" {proto} dport {p} accept\n'
        for p in OPEN_VPN_PORTS
        for proto in ("tcp", "udp")
    )
    return f"""table {family} filter
delete table {family} filter
table {family} filter {{
  chain dns-fw {{
{dns_accept}    drop
  }}
  chain dns-leak {{
    limit rate 1/minute log prefix "dns-leak: "
    drop
  }}
  chain INPUT {{
    type filter hook input priority filter; policy drop;
    iifname "lo" accept
    ct state invalid drop
    ct state established,related accept
{icmp6}{webui}{forwarded}  }}
  chain FORWARD {{
    type filter hook forward priority filter; policy drop;
  }}
  chain OUTPUT {{
    type filter hook output priority filter; policy accept;
    oifname "{veth}" tcp dport 53 jump dns-leak
    oifname "{veth}" udp dport 53 jump dns-leak
    udp dport 53 jump dns-fw
    oifname "{veth}" ct state established,related accept
    oifname "{veth}" ct state new drop
  }}
}}
"""


# --- up / down ---------------------------------------------------------------------


def _tunnel_up(conf: dict[str, list[str]]) -> None:
    shape = _shape()
    wg = shape.wg_client
    if not t.link_exists(wg, t.NS_VPN):
        if not procs.running("client-wg", "wireguard-go"):
            procs.start(
                "client-wg",
                ["wireguard-go", "-f", wg],
                netns=t.NS_WAN,
                env={"WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"},
            )
        deadline = time.monotonic() + 5
        while not t.link_exists(wg, t.NS_WAN):
            if time.monotonic() > deadline:
                raise t.LabError(f"wireguard-go did not create {wg} in {t.NS_WAN}")
            time.sleep(0.05)
        _ip("-n", t.NS_WAN, "link", "set", wg, "netns", t.NS_VPN)
    for a in conf.get("address", []):
        _nsip("addr", "replace", a, "dev", wg)
    # The stripped config with the private key in it, 0600, removed at once.
    stripped = [
        line
        for line in t.client_conf().read_text().splitlines()
        if line.split("=", 1)[0].strip().lower() not in ("address", "dns", "mtu")
    ]
    i = stripped.index("[Interface]") + 1
    stripped.insert(i, "PrivateKey = " + t.client_key().read_text().strip())
    fd, path = tempfile.mkstemp(prefix="qvl-vc-", dir="/run")
    try:
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(stripped) + "\n")
        t.run(["wg", "setconf", wg, path], netns=t.NS_VPN)
    finally:
        os.unlink(path)
    mtu = (conf.get("mtu") or [str(t.MTU)])[0]
    _nsip("link", "set", wg, "mtu", mtu, "up")
    _nsip("-4", "route", "replace", "default", "dev", wg)
    _nsip("-6", "route", "replace", "default", "dev", wg)
    _nsip("-4", "route", "replace", "default", "dev", wg, "table", DNS_TABLE)
    _nsip("-6", "route", "replace", "default", "dev", wg, "table", DNS_TABLE)


def _tunnel_down() -> None:
    procs.stop("client-wg", "wireguard-go", timeout=5)
    if t.ns_exists(t.NS_VPN) and t.link_exists(t.WG_CLIENT, t.NS_VPN):
        _nsip("link", "del", t.WG_CLIENT, check=False)
    if t.link_exists(t.WG_CLIENT, t.NS_WAN):
        _ip("-n", t.NS_WAN, "link", "del", t.WG_CLIENT, check=False)
    t.run(["rm", "-f", f"/var/run/wireguard/{t.WG_CLIENT}.sock"], check=False)


def up() -> None:
    shape = _shape()
    conf = _conf()
    dns = conf.get("dns", [])
    if not dns:
        raise t.LabError("WireGuard configuration error: missing DNS field")  # as vpn-up does
    _refuse_a_taken_prefix(shape)
    if not t.ns_exists(t.NS_VPN):
        _ip("netns", "add", t.NS_VPN)
    _nsip("link", "set", "lo", "up")
    # Firewall first, as vpn-up.nix does: nothing leaves before it is there.
    for family in ("ip", "ip6"):
        t.nft(t.NS_VPN, firewall_rules(family, dns))
    os.makedirs(f"/etc/netns/{t.NS_VPN}", exist_ok=True)
    with open(f"/etc/netns/{t.NS_VPN}/resolv.conf", "w") as f:
        f.write("".join(f"nameserver {d}\n" for d in dns))
    _tunnel_up(conf)
    # The bridge in the root namespace and the veth pair into the namespace.
    br = shape.bridge
    assert br and shape.lan6_host_addr and shape.lan6_ns_addr
    if not t.link_exists(br):
        _ip("link", "add", br, "type", "bridge")
    _ip("addr", "replace", shape.lan_host_addr, "dev", br)
    _ip("-6", "addr", "replace", shape.lan6_host_addr, "dev", br, "nodad")
    _ip("link", "set", br, "up")
    if not t.link_exists(shape.lan_host):
        _ip("link", "add", shape.lan_host, "type", "veth", "peer", "name", shape.lan_ns,
            "netns", t.NS_VPN)  # fmt: skip
    _ip("link", "set", shape.lan_host, "master", br)
    _ip("link", "set", shape.lan_host, "up")
    _nsip("addr", "replace", shape.lan_ns_addr, "dev", shape.lan_ns)
    _nsip("-6", "addr", "replace", shape.lan6_ns_addr, "dev", shape.lan_ns, "nodad")
    _nsip("link", "set", shape.lan_ns, "up")
    # accessibleFrom: routed back through the bridge.
    gw = shape.lan_host_addr.split("/")[0]
    for r in shape.lan_ranges:
        _nsip("route", "replace", r, "via", gw)
    # Port 53 always into the tunnel's table.
    for family in ("-4", "-6"):
        rules = _nsip(family, "rule", "show", check=False)
        for proto in ("udp", "tcp"):
            if f"ipproto {proto} dport 53 lookup {DNS_TABLE}" not in rules:
                _nsip(family, "rule", "add", "ipproto", proto, "dport", "53", "lookup",
                      DNS_TABLE, "priority", "100")  # fmt: skip


def down() -> None:
    shape = _shape()
    _tunnel_down()
    if t.ns_exists(t.NS_VPN):
        _ip("netns", "del", t.NS_VPN, check=False)
    for link in (shape.bridge, shape.lan_host):
        if link and t.link_exists(link):
            _ip("link", "del", link, check=False)
    t.run(["rm", "-rf", f"/etc/netns/{t.NS_VPN}"], check=False)


def command(name: str) -> str:
    if name == "up":
        up()
    elif name == "down":
        down()
    elif name == "tunnel-up":
        _tunnel_up(_conf())
    elif name == "tunnel-down":
        _tunnel_down()
    elif name == "restart-tunnel":
        # systemctl restart <name>.service: ExecStopPost (down), then ExecStart
        # (up); BindsTo= stops the confined qBittorrent first and starts it
        # again after, into the new namespace.
        from qbt_vpn_watchdog.lab import services

        was_running = services.stop_client_qbt()
        down()
        up()
        if was_running:
            services.start_client_qbt()
    else:
        raise t.LabError(f"unknown confined-side command {name!r}")
    return ""


t.BUILDERS[t.VPN_CONFINEMENT.name] = command
