"""Steps more than one lab fault takes: the tunnel's restart, a qBittorrent preference
set and waited for, the kill switch's rules a fault marked, IPv6 on the LAN veth.

Shared by faults.py and guard_faults.py (which faults.py registers), so neither
imports the other's module to use them.
"""

from __future__ import annotations

import time

from qbt_vpn_watchdog.lab import services
from qbt_vpn_watchdog.lab import topology as t


def restart_tunnel() -> None:
    """What systemd's restart of the tunnel unit does on the host: the script's restart-tunnel."""
    t.confined("restart-tunnel")


def _set_preference(key: str, value: object, **also: object) -> None:
    """Set qBittorrent's ``key`` (and ``also``) through its API; wait until it reads back."""
    c = services.qbt_client()
    c.app_set_preferences({key: value, **also})
    deadline = time.monotonic() + 5
    while c.app_preferences().get(key) != value:
        if time.monotonic() > deadline:
            raise t.LabError(f"qBittorrent did not take {key} = {value!r}")
        time.sleep(0.1)


def _delete_rules(chain: str, comment: str) -> None:
    """Delete the kill switch's rules in ``chain`` that a fault added (marked by ``comment``)."""
    if not t.ns_exists(t.NS_VPN):
        return
    out = t.run(
        ["nft", "-a", "list", "chain", "inet", t.KILLSWITCH_TABLE, chain],
        netns=t.NS_VPN,
        check=False,
    )
    for line in out.splitlines():
        if comment in line and "# handle " in line:
            handle = line.rsplit("# handle ", 1)[1].strip()
            t.run(
                ["nft", "delete", "rule", "inet", t.KILLSWITCH_TABLE, chain, "handle", handle],
                netns=t.NS_VPN,
                check=False,
            )


def _lan_ipv6(disabled: int) -> None:
    path = f"/proc/sys/net/ipv6/conf/{t.LAN_NS}/disable_ipv6"
    t.run(["sh", "-c", f"echo {disabled} > {path}"], netns=t.NS_VPN)


def break_ipv6() -> None:
    # What a router advertisement on the LAN does once IPv6 is on for the veth
    # (a host update, someone's sysctl): an address and a default route out of
    # the namespace beside the tunnel. IPv6 is blocked there by design, so this
    # is the path the ipv6 check must see.
    _lan_ipv6(0)
    t.run(["ip", "-6", "addr", "add", t.LAN6_NS_ADDR, "dev", t.LAN_NS, "nodad"], netns=t.NS_VPN)
    t.run(
        ["ip", "-6", "route", "replace", "default", "via", t.LAN6_ROUTER, "dev", t.LAN_NS],
        netns=t.NS_VPN,
    )


def heal_ipv6() -> None:
    # IPv6 off again on the veth takes its addresses and routes with it.
    if t.ns_exists(t.NS_VPN):
        _lan_ipv6(1)
