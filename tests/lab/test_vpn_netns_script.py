"""The shared bring-up script's own contract; the lab tests run its up/down/restart for real."""

from __future__ import annotations

import subprocess

import pytest

from qbt_vpn_watchdog.lab.topology import script_path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script_path()), *args], capture_output=True, text=True)


def test_ships_as_package_data_and_parses():
    assert script_path().is_file()
    assert subprocess.run(["bash", "-n", str(script_path())]).returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up"], "--netns is required"),
        (["--netns", "x", "up"], "--interface is required"),
        (["--netns", "x", "--interface", "a-name-longer-than-15", "up"], "at most 15"),
        (["--netns", "x", "--interface", "wg0", "--userspace", "wireguard-go", "up"], "--pidfile"),
        (["--netns", "x", "--interface", "wg0", "--bogus", "1", "up"], "unknown argument"),
        (["--netns", "x", "--interface", "wg0"], "no command"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(args, message):
    p = run(*args)
    assert p.returncode == 1 and message in p.stderr


def test_help_describes_every_command():
    out = run("--help").stdout
    for word in (
        "up",
        "down",
        "tunnel-up",
        "tunnel-down",
        "restart-tunnel",
        "status",
        "--userspace",
    ):
        assert word in out


@pytest.mark.root
def test_down_of_nothing_is_fine_and_touches_nothing():
    args = ["--netns", "qvl-none", "--interface", "qvlnone0", "--lan-veth", "qvlnone1:qvlnone2"]
    for _ in range(2):
        p = run(*args, "down")
        assert p.returncode == 0, p.stderr
    assert (
        "qvl-none"
        not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
    st = run(*args, "status")
    assert st.returncode == 1 and "absent" in st.stdout


@pytest.mark.root
def test_tunnel_up_without_the_namespace_says_so(tmp_path):
    conf = tmp_path / "wg.conf"
    conf.write_text("[Interface]\nAddress = 10.0.0.2/32\n")
    p = run("--netns", "qvl-none", "--interface", "qvlnone0", "--config", str(conf), "tunnel-up")
    assert p.returncode == 1 and "does not exist" in p.stderr


# --- IPv6 is blocked in the namespace -------------------------------------------------

V6_NS, V6_WAN, V6_IF = "qvt6-vpn", "qvt6-wan", "qvt6wg0"
V6_VETH = ("qvt6l0", "qvt6l1")


def _sh(*argv: str, check: bool = True) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=check).stdout


@pytest.fixture
def v6_setup(tmp_path):
    """A namespace brought up by the script with an AirVPN-style dual-stack config.

    wireguard-go's UDP socket lives in an empty namespace of its own, so its
    handshake attempts go nowhere. Everything is removed afterwards.
    """
    import shutil

    if shutil.which("wireguard-go") is None or shutil.which("wg") is None:
        pytest.skip("needs wireguard-go and wireguard-tools")
    for ns in (V6_NS, V6_WAN):
        if ns in _sh("ip", "netns", "list"):
            pytest.skip(f"namespace {ns} exists already (not ours: left alone)")
    key = _sh("wg", "genkey").strip()
    peer_key = subprocess.run(
        ["wg", "pubkey"], input=_sh("wg", "genkey"), capture_output=True, text=True, check=True
    ).stdout.strip()
    conf = tmp_path / "wg.conf"
    conf.write_text(
        "[Interface]\n"
        f"PrivateKey = {key}\n"
        "Address = 10.139.0.2/32, fd7d:76ee:e68f:a993::2/128\n"
        "DNS = 10.128.0.1, fd7d:76ee:e68f:a993::1\n"
        "MTU = 1320\n\n"
        "[Peer]\n"
        f"PublicKey = {peer_key}\n"
        "Endpoint = 127.0.0.1:1637\n"
        "AllowedIPs = 0.0.0.0/0, ::/0\n"
    )
    args = [
        "--netns", V6_NS, "--interface", V6_IF, "--config", str(conf),
        "--wan-netns", V6_WAN, "--userspace", "wireguard-go",
        "--pidfile", str(tmp_path / "wg.pid"),
        "--lan-veth", f"{V6_VETH[0]}:{V6_VETH[1]}",
        "--lan-host-addr", "198.19.66.1/30", "--lan-ns-addr", "198.19.66.2/30",
        "--lan-ranges", "198.19.66.0/30,fd00:66::/64",
    ]  # fmt: skip
    _sh("ip", "netns", "add", V6_WAN)
    try:
        up = run(*args, "up")
        yield args, up
    finally:
        run(*args, "down")
        subprocess.run(["ip", "netns", "del", V6_WAN], capture_output=True)


def _v6_state() -> tuple[str, str]:
    addrs = _sh("ip", "-n", V6_NS, "-6", "addr", "show")
    routes = _sh("ip", "-n", V6_NS, "-6", "route", "show", "table", "all")
    return addrs.strip(), routes.strip()


@pytest.mark.root
def test_up_blocks_ipv6_in_the_namespace(v6_setup):
    args, up = v6_setup
    assert up.returncode == 0, up.stderr
    assert "address fd7d:76ee:e68f:a993::2/128 skipped: IPv6 is blocked" in up.stderr
    assert "LAN range fd00:66::/64 skipped" in up.stderr
    # No IPv6 address and no IPv6 route on any interface, the tunnel's included.
    assert _v6_state() == ("", "")
    v4 = _sh("ip", "-n", V6_NS, "-4", "addr", "show", "dev", V6_IF)
    assert "10.139.0.2/32" in v4
    # Only the IPv4 resolver: the IPv6 one could not be reached.
    resolv = open(f"/etc/netns/{V6_NS}/resolv.conf").read()
    assert "nameserver 10.128.0.1" in resolv and "fd7d" not in resolv
    rules = _sh("ip", "netns", "exec", V6_NS, "nft", "list", "table", "inet", "vpn_killswitch")
    assert rules.count("meta nfproto ipv6 drop") == 2


@pytest.mark.root
def test_restart_tunnel_removes_an_ipv6_path_that_appeared(v6_setup):
    args, up = v6_setup
    assert up.returncode == 0, up.stderr
    veth = V6_VETH[1]
    # The fault the watchdog's ipv6 check reports: IPv6 back on the LAN side,
    # an address and a default route through the veth.
    _sh("ip", "netns", "exec", V6_NS, "sh", "-c",
        f"echo 0 > /proc/sys/net/ipv6/conf/{veth}/disable_ipv6")  # fmt: skip
    _sh("ip", "-n", V6_NS, "-6", "addr", "add", "fd51:7a6c:1::2/64", "dev", veth, "nodad")
    _sh("ip", "-n", V6_NS, "-6", "route", "add", "default", "via", "fd51:7a6c:1::1", "dev", veth)
    addrs, routes = _v6_state()
    assert "fd51:7a6c:1::2/64" in addrs and "default via fd51:7a6c:1::1" in routes
    # The tunnel unit's reload, the watchdog's remedy for it.
    p = run(*args, "restart-tunnel")
    assert p.returncode == 0, p.stderr
    assert _v6_state() == ("", "")


@pytest.mark.root
def test_more_lan_ports_are_each_opened_on_the_veth(v6_setup):
    # Other confined units' web UIs (the NixOS module's qbtVpn.ports): the kill
    # switch accepts each from the LAN ranges, and replies to each, nothing else.
    args, up = v6_setup
    assert up.returncode == 0, up.stderr
    again = run(*args, "--webui-port", "8080,9117", "up")
    assert again.returncode == 0, again.stderr
    rules = _sh("ip", "netns", "exec", V6_NS, "nft", "list", "table", "inet", "vpn_killswitch")
    assert 'iifname "qvt6l1" ip saddr @lan4 tcp dport { 8080, 9117 } accept' in rules
    assert (
        'oifname "qvt6l1" ip daddr @lan4 tcp sport { 8080, 9117 } ct state established accept'
        in rules
    )
    single = run(*args, "--webui-port", "8080", "up")
    assert single.returncode == 0, single.stderr
    rules = _sh("ip", "netns", "exec", V6_NS, "nft", "list", "table", "inet", "vpn_killswitch")
    assert "tcp dport 8080 accept" in rules and "9117" not in rules


@pytest.mark.root
def test_restart_tunnel_re_installs_a_removed_or_loosened_kill_switch(v6_setup):
    # The watchdog's remedy for killswitch missing/lan_open on a namespace this script built.
    args, up = v6_setup
    assert up.returncode == 0, up.stderr

    def rules() -> str:
        return _sh("ip", "netns", "exec", V6_NS, "nft", "list", "ruleset")

    whole = rules()
    assert "table inet vpn_killswitch" in whole
    _sh("ip", "netns", "exec", V6_NS, "nft", "insert", "rule", "inet", "vpn_killswitch", "output",
        "oifname", V6_VETH[1], "accept")  # fmt: skip
    assert rules() != whole
    assert run(*args, "restart-tunnel").returncode == 0
    assert rules() == whole, "the loosened table replaced by the script's own"
    _sh("ip", "netns", "exec", V6_NS, "nft", "delete", "table", "inet", "vpn_killswitch")
    assert "vpn_killswitch" not in rules()
    assert run(*args, "restart-tunnel").returncode == 0
    assert rules() == whole, "the removed table installed again"
