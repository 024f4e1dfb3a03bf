"""The lab's confined-side shapes without bringing anything up (pure logic)."""

from __future__ import annotations

import pytest

from qbt_vpn_watchdog.lab import topology as t
from qbt_vpn_watchdog.lab import vpn_confinement


@pytest.fixture
def vc_shape():
    before = t.SHAPE
    t.select("vpn-confinement")
    try:
        yield t.SHAPE
    finally:
        t.select(before)


def test_an_unknown_shape_is_refused_by_name():
    # (A lab up on this machine with another shape is what this process started
    # with: topology reads /run/qvl-lab/shape at import.)
    before = (t.SHAPE, t.NS_VPN)
    with pytest.raises(t.LabError, match=r"unknown lab shape 'vpn'.*own, vpn-confinement"):
        t.select("vpn")
    assert (t.SHAPE, t.NS_VPN) == before


def test_selecting_a_shape_moves_every_name_the_lab_reads(vc_shape):
    assert (t.NS_VPN, t.WG_CLIENT, t.LAN_NS, t.LAN_NS_IP) == (
        "qvl-vc", "qvl-vc0", "veth-qvl-vc", "192.168.15.1",
    )  # fmt: skip
    assert t.NS_VPN in t.NAMESPACES and "qvl-vpn" not in t.NAMESPACES
    # VPN-Confinement's limits: a namespace name of at most 7 characters, link names of 15.
    assert len(t.NS_VPN) <= 7
    assert all(len(n) <= 15 for n in (t.WG_CLIENT, t.LAN_HOST, t.LAN_NS, vc_shape.bridge))


def test_the_firewall_is_vpn_confinements_in_its_order(vc_shape):
    rules = vpn_confinement.firewall_rules("ip", ["10.128.0.1", "fd7d::1"])
    out = rules[rules.index("chain OUTPUT") :]
    order = [
        'oifname "veth-qvl-vc" tcp dport 53 jump dns-leak',
        'oifname "veth-qvl-vc" udp dport 53 jump dns-leak',
        "udp dport 53 jump dns-fw",
        'oifname "veth-qvl-vc" ct state established,related accept',
        'oifname "veth-qvl-vc" ct state new drop',
    ]
    positions = [out.index(line) for line in order]
    assert positions == sorted(positions)
    # Only this family's resolver is let through; INPUT drops all but what it names.
    assert "ip daddr 10.128.0.1 meta l4proto udp accept" in rules and "fd7d" not in rules
    assert 'iifname "veth-qvl-vc" tcp dport 8080 accept' in rules
    assert 'iifname "qvl-vc0" udp dport 47123 accept' in rules
    v6 = vpn_confinement.firewall_rules("ip6", ["10.128.0.1", "fd7d::1"])
    assert "ip6 daddr fd7d::1 meta l4proto udp accept" in v6 and "ipv6-icmp accept" in v6


@pytest.mark.root
def test_its_firewall_is_valid_nftables(vc_shape, tmp_path):
    import shutil
    import subprocess

    if shutil.which("nft") is None or shutil.which("unshare") is None:
        pytest.skip("needs nft and unshare")
    path = tmp_path / "vc.nft"
    path.write_text(
        vpn_confinement.firewall_rules("ip", ["10.128.0.1"])
        + vpn_confinement.firewall_rules("ip6", ["fd7d::1"])
    )
    # `nft -c` only checks; in a fresh namespace it could not touch the host anyway.
    p = subprocess.run(["unshare", "--net", "nft", "-c", "-f", str(path)],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert p.returncode == 0, p.stderr
