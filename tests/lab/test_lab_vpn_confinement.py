"""The watchdog on a namespace shaped as VPN-Confinement builds it (issue 25).

The session's lab with its confined side swapped for the "vpn-confinement"
shape (lab/vpn_confinement.py: VPN-Confinement's names, addresses, bridge, ULA
on the veth, firewall and DNS policy routing), then swapped back. The same
server, faults and qBittorrent as every other lab test.

VPN-Confinement puts a ULA route on its veth (fd93:9701:1d00::/64) and its
kill switch drops every new connection out of that veth: the ipv6 check must
call that ``route_contained`` (degraded: reported, never acted on, no alert),
never ``route_outside``; the daemon runs below keep every check on, so a
benign IPv6 route is shown not to make the watchdog act.
"""

from __future__ import annotations

import re
import time

import pytest

from qbt_vpn_watchdog.checks import load_all
from tests.lab.test_remediation_lab import Torrents, Watchdog, free_port, lab_watchdog_config
from tests.support.procs import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.qbittorrent]

# Every check, from the registry; ipv6 says route_contained here (the module docstring).
CHECKS = list(load_all())
CONTAINED = ("ipv6", "route_contained")


def failing(results) -> dict[str, tuple[str, str]]:
    """The failing checks of one round but the ULA behind the kill switch."""
    return {
        n: (r.reason, r.detail)
        for n, r in results.items()
        if not r.ok and (n, r.reason) != CONTAINED
    }


@pytest.fixture(scope="module")
def vc_lab(lab):
    from qbt_vpn_watchdog.lab import control

    lab.heal()
    path = control.reshape("vpn-confinement")
    try:
        yield lab, path
    finally:
        lab.heal()
        control.reshape("own")


@pytest.fixture
def healed_vc_lab(vc_lab):
    try:
        yield vc_lab
    finally:
        vc_lab[0].heal()


def answered(predicate):
    """``predicate`` as a wait_for condition that is simply not yet true while
    qBittorrent restarts with the namespace (connection refused, logged out)."""

    def cond():
        try:
            return predicate()
        except Exception:  # noqa: BLE001 - qbittorrent-api and requests raise many kinds
            return False

    return cond


def observe(text: str) -> str:
    return re.sub(r'(?m)^mode = "enforce"$', 'mode = "observe"', text)


def test_the_shape_is_vpn_confinements(vc_lab):
    lab, path = vc_lab
    t = lab.t
    assert t.SHAPE.name == "vpn-confinement"
    text = path.read_text()
    assert 'name = "qvl-vc"' in text and 'interface = "qvl-vc0"' in text
    assert 'url = "http://192.168.15.1:8080"' in text
    # As on a real VPN-Confinement host: a restart cannot re-install another module's rules.
    assert "built_by_vpn_netns = false" in text
    # Its links and addresses: the bridge in the root namespace, the veth pair, the ULA.
    br = lab.exec_in(t.NS_VPN, ["ip", "-o", "addr", "show", "dev", "veth-qvl-vc"]).stdout
    assert "192.168.15.1/24" in br and "fd93:9701:1d00::2/64" in br
    # Its firewall (iptables-nft's tables) and port 53 routed into table 51820.
    rules = lab.exec_in(t.NS_VPN, ["nft", "list", "table", "ip", "filter"]).stdout
    assert 'oifname "veth-qvl-vc" ct state new drop' in rules
    assert "policy drop" in rules and "jump dns-fw" in rules
    assert "lookup 51820" in lab.exec_in(t.NS_VPN, ["ip", "rule"]).stdout


def test_checks_healthy_in_observe_mode(healed_vc_lab):
    """Three one-shot rounds (the CLI's path), then the daemon in observe mode for 30 s.

    The 10-minute run is recorded by hand in docs/nixos-host.md.
    """
    lab, _ = healed_vc_lab
    for _ in range(3):
        assert failing(lab.run_checks(list(CHECKS))) == {}
    port = free_port()
    cfg = lab_watchdog_config(lab.config_path, lab.config_path.parent / "vc-observe.toml", port)
    cfg.write_text(observe(cfg.read_text()))
    w = Watchdog(cfg, port, lab.config_path.parent / "vc-observe.log").start()
    try:
        states: set[str | None] = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states.add(w.state())
            time.sleep(2)
        reasons = w.metrics()["qbtvpn_check_reason"]
        bad = {k for k, v in reasons.items() if v == 1 and 'reason="ok"' not in k}
        assert bad == {'check="ipv6",reason="route_contained"'}, w.log_text()[-3000:]
        assert states == {"ok"}, w.log_text()[-3000:]
        assert w.count("qbtvpn_remediations_total", "restart_tunnel") == 0
    finally:
        w.stop()


def test_ipv6_sees_the_ula_behind_the_kill_switch_as_contained(healed_vc_lab):
    lab, _ = healed_vc_lab
    results = lab.run_checks(["ipv6", "killswitch"])
    assert results["killswitch"].ok, results["killswitch"].detail
    r = results["ipv6"]
    assert (r.ok, r.reason) == (False, "route_contained"), f"{r.reason}: {r.detail}"
    assert "fd93:9701:1d00::/64" in r.detail


def test_the_92_byte_failure_is_caught(healed_vc_lab):
    from qbt_vpn_watchdog.lab.faults import FAULTS

    lab, _ = healed_vc_lab
    check, reasons = FAULTS["return-path"].signature
    lab.break_("return-path")
    r = lab.run_checks([check])[check]
    assert r.reason in reasons, f"{r.reason}: {r.detail}"
    # One handshake response came back and not one data packet, while tx climbs.
    peer = lab.peer()
    assert peer["rx"] == 92 and peer["tx"] > 92


def test_remediation_stops_torrents_and_restarts_vpn_confinements_unit(healed_vc_lab, tmp_path):
    """Enforce mode: the torrents are stopped and tagged, tier 2 runs the configured
    command (the lab's equivalent of `systemctl restart <name>.service`: the namespace
    rebuilt, qBittorrent restarted into it), and after the heal exactly ours resume."""
    lab, _ = healed_vc_lab
    from qbt_vpn_watchdog.lab import procs

    torrents = Torrents(lab, tmp_path)
    port = free_port()
    cfg = lab_watchdog_config(lab.config_path, tmp_path / "watchdog.toml", port)
    w = Watchdog(cfg, port, tmp_path / "watchdog.log").start()
    try:
        wait_for("remediation ok", lambda: w.state() == "ok", 30)
        qbt_pid = procs.read_pid("client-qbt")
        lab.break_("return-path")
        wait_for("torrents stopped and tagged", torrents.all_held, 60)
        assert torrents.user_untouched()
        wait_for(
            "a tunnel restart",
            lambda: w.count("qbtvpn_remediations_total", "restart_tunnel") >= 1,
            60,
        )
        # The unit's restart took qBittorrent with it, as BindsTo= does.
        wait_for("qBittorrent restarted", lambda: procs.read_pid("client-qbt") != qbt_pid, 30)
        lab.heal("return-path")
        wait_for("torrents resumed", answered(torrents.all_resumed), 120)
        wait_for("remediation ok", lambda: w.state() == "ok", 30)
        assert torrents.user_untouched()
    finally:
        w.stop()
        print(w.log_text()[-6000:])
        torrents.cleanup()
