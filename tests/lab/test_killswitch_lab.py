"""The killswitch check against the lab: its probe never reaches the host's end of the
LAN veth, even with the kill switch removed; both kill-switch faults reported at once."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from qbt_vpn_watchdog.lab import topology as t
from qbt_vpn_watchdog.sources.killswitch import PROBE_V4
from qbt_vpn_watchdog.sources.netns import socket_in

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.qbittorrent]

COUNT_TABLE = "qvl_guard_count"  # in the root namespace, on the lab's own veth end only


def nft_root(*args: str, input: str | None = None, check: bool = True) -> str:
    p = subprocess.run(["nft", *args], input=input, capture_output=True, text=True, check=check)
    return p.stdout


@pytest.fixture
def counter(healed_lab):
    """Counts, at the root namespace's end of the LAN veth (the first hop), every UDP
    packet to the discard port and every IPv6 UDP packet that arrives from the namespace."""
    nft_root(
        "-f",
        "-",
        input=f"""table netdev {COUNT_TABLE} {{
  chain ingress {{
    type filter hook ingress device "{t.LAN_HOST}" priority 0;
    udp dport 9 counter
  }}
}}
""",
    )
    try:
        yield lambda: int(
            nft_root("list", "table", "netdev", COUNT_TABLE).split("counter packets ")[1].split()[0]
        )
    finally:
        nft_root("delete", "table", "netdev", COUNT_TABLE, check=False)


def test_with_the_kill_switch_removed_no_probe_reaches_the_first_hop(healed_lab, counter):
    lab = healed_lab
    lab.break_("killswitch")
    # IPv6 on as well, so that the IPv6 probe has a way out too.
    lab.exec_in(t.NS_VPN, ["sysctl", "-q", "-w", f"net.ipv6.conf.{t.LAN_NS}.disable_ipv6=0"])
    try:
        time.sleep(2.5)  # the link-local address out of DAD
        for _ in range(3):
            r = lab.run_checks(only=["killswitch"])["killswitch"]
            assert (r.ok, r.reason) == (False, "missing"), r.detail
            assert r.facts == {f"{t.LAN_NS} ipv4": "open", f"{t.LAN_NS} ipv6": "open"}
        time.sleep(0.2)
        assert counter() == 0, "a kill-switch probe reached the host's end of the veth"
        # The control: the same datagram at TTL 1 does arrive, so the counter sees such packets.
        s = socket_in(t.NS_VPN, socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, t.LAN_NS.encode())
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        s.sendto(b"control", PROBE_V4)
        s.close()
        time.sleep(0.2)
        assert counter() == 1
    finally:
        lab.exec_in(t.NS_VPN, ["sysctl", "-q", "-w", f"net.ipv6.conf.{t.LAN_NS}.disable_ipv6=1"])


def test_the_restart_re_installs_the_kill_switch(healed_lab):
    # What remediation's tier 2 runs on a namespace vpn-netns.sh built.
    from qbt_vpn_watchdog.lab import control, services

    lab = healed_lab
    lab.break_("killswitch-open")
    assert lab.run_checks(only=["killswitch"])["killswitch"].reason == "lan_open"
    control.restart_tunnel()
    services.rebind_client_qbt()
    r = lab.run_checks(only=["killswitch"])["killswitch"]
    assert r.ok, r.detail
    assert r.facts[f"{t.LAN_NS} ipv4"] == "refused"
