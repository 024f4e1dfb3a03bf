"""The kill-switch probe against real namespaces and nftables: refused, open, no path,
and never on the wire (a counter at the veth's other end, in another namespace of ours)."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from qbt_vpn_watchdog.sources import NO_PATH, OPEN, REFUSED
from qbt_vpn_watchdog.sources.killswitch import PROBE_V4, PROBE_V6, KillSwitchProbe
from qbt_vpn_watchdog.sources.netns import socket_in
from tests.support.netns_helpers import netns, sh, veth
from tests.support.session_names import SESSION, unique

pytestmark = pytest.mark.root

IF_IN, IF_OUT = f"qvpk{SESSION}", f"qvpo{SESSION}"
# A kill switch of another module's shape: another table name, reject instead of
# drop, IPv4 and IPv6 in separate tables.
FOREIGN = """table ip othermod {
  chain out {
    type filter hook output priority 0; policy accept;
    oifname "lo" accept
    oifname "wgX" accept
    reject with icmp type admin-prohibited
  }
}
table ip6 othermod6 {
  chain out {
    type filter hook output priority 0; policy drop;
    oifname "lo" accept
  }
}
"""
OURS = """table inet vpn_killswitch {
  chain output {
    type filter hook output priority filter; policy drop;
    oifname "lo" accept
    meta nfproto ipv6 drop
    oifname "wgX" accept
  }
}
"""
COUNTER = f"""table netdev qvp_count {{
  chain ingress {{
    type filter hook ingress device "{IF_OUT}" priority 0;
    udp dport 9 counter
  }}
}}
"""


@pytest.fixture
def pair():
    with netns(unique("qvp-ksin")) as inside, netns(unique("qvp-ksout")) as outside:
        veth(inside, IF_IN, "10.77.5.2/30", outside, IF_OUT, "10.77.5.1/30")
        nft(outside, COUNTER)
        # IPv6 needs its link-local address out of DAD before it can send.
        deadline = time.monotonic() + 5
        while "tentative" in sh("ip", "-n", inside, "-6", "addr", "show", "dev", IF_IN) or (
            "fe80" not in sh("ip", "-n", inside, "-6", "addr", "show", "dev", IF_IN)
        ):
            assert time.monotonic() < deadline, "no usable IPv6 link-local address"
            time.sleep(0.1)
        yield inside, outside


def arrived(outside: str) -> int:
    out = sh("ip", "netns", "exec", outside, "nft", "list", "table", "netdev", "qvp_count")
    return int(out.split("counter packets ")[1].split()[0])


def nft(ns: str, text: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=text, text=True, check=True)


def verdicts(inside: str) -> dict[tuple[str, str], str]:
    r = KillSwitchProbe(inside).probe(skip=("wgX",))
    return {(p.interface, p.family): p.verdict for p in r.probes}, r.tables


def test_no_kill_switch_the_probes_go_through_and_nothing_reaches_the_wire(pair):
    inside, outside = pair
    v, tables = verdicts(inside)
    assert v == {(IF_IN, "ipv4"): OPEN, (IF_IN, "ipv6"): OPEN}
    assert tables == ()  # listed because a probe got out: none at all
    assert arrived(outside) == 0, "a probe left the namespace onto the link"
    # The control: the same packet at TTL 1 does arrive, so the counter would have seen it.
    for fam, dst, level, opt in (
        (socket.AF_INET, PROBE_V4, socket.IPPROTO_IP, socket.IP_MULTICAST_TTL),
        (socket.AF_INET6, PROBE_V6, socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS),
    ):
        s = socket_in(inside, fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, IF_IN.encode())
        s.setsockopt(level, opt, 1)
        s.sendto(b"control", dst)
        s.close()
    time.sleep(0.2)
    assert arrived(outside) == 2


@pytest.mark.parametrize("rules", [OURS, FOREIGN], ids=["vpn-netns", "another-module"])
def test_a_kill_switch_refuses_both_families_whatever_its_shape(pair, rules):
    inside, _ = pair
    nft(inside, rules)
    v, tables = verdicts(inside)
    assert v == {(IF_IN, "ipv4"): REFUSED, (IF_IN, "ipv6"): REFUSED}
    assert tables is None  # nothing got out: no fork of nft


def test_ipv6_off_on_the_link_is_no_path_and_a_down_link_too(pair):
    inside, _ = pair
    nft(inside, OURS)
    sh("ip", "netns", "exec", inside, "sysctl", "-q", "-w", f"net.ipv6.conf.{IF_IN}.disable_ipv6=1")
    v, _ = verdicts(inside)
    assert v == {(IF_IN, "ipv4"): REFUSED, (IF_IN, "ipv6"): NO_PATH}
    sh("ip", "-n", inside, "link", "set", IF_IN, "down")
    v, _ = verdicts(inside)
    assert v[(IF_IN, "ipv4")] == NO_PATH


def test_one_rule_accepting_output_on_the_link_opens_it_and_the_table_is_named(pair):
    inside, outside = pair
    nft(inside, OURS)
    sh("ip", "netns", "exec", inside, "nft", "insert", "rule", "inet", "vpn_killswitch",
       "output", "oifname", IF_IN, "accept")  # fmt: skip
    v, tables = verdicts(inside)
    assert v[(IF_IN, "ipv4")] == OPEN and v[(IF_IN, "ipv6")] == OPEN
    assert tables == ("inet vpn_killswitch",)
    assert arrived(outside) == 0


def test_a_missing_namespace_is_a_source_error():
    from qbt_vpn_watchdog.sources import SourceError

    with pytest.raises(SourceError, match="does not exist"):
        KillSwitchProbe(unique("qvp-nonexistent")).probe(skip=())
