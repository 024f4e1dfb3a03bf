"""nix/ evaluated as whole NixOS systems against real NixOS modules.

Through ../shared/nixos-eval/eval.nix (tests/support/nixos_eval.py finds it, or a
nixpkgs checkout named by NIXPKGS=/path): every system the modules are meant
for must evaluate with its toplevel forced, no failed assertion, no warning
that NixOS alone would not give, and its units present; the unit files
NixOS renders pass `systemd-analyze verify` with no finding. The stub
harness this replaces could not see NixOS's own definitions (it accepted an
example host every real NixOS rejects, see issue 10).
"""

from __future__ import annotations

import functools
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from qbt_vpn_watchdog import config as wconfig
from qbt_vpn_watchdog.cli import CONFIG_ENV
from qbt_vpn_watchdog.health import stall_limit
from tests.support import nixos_eval
from tests.support.nixos_eval import (
    CONFINEMENT,
    EXAMPLE,
    OWN_EXAMPLE,
    SECOND_UNIT,
    VPN_CONFINEMENT,
    WATCHDOG,
    EvalError,
    System,
    to_toml,
)

pytestmark = pytest.mark.skipif(
    nixos_eval.unavailable() is not None, reason=nixos_eval.unavailable() or ""
)

ROOT = nixos_eval.ROOT
SCRIPT = ROOT / "watchdog" / "qbt_vpn_watchdog" / "vpn-netns.sh"
TUNNEL = "qbittorrent-vpn-tunnel.service"
QBT = "qbittorrent-vpn.service"
HOST_TABLE = "qbittorrent_vpn_host"


@functools.cache
def ev(system: System, toplevel: bool = True) -> nixos_eval.Evaluation:
    return nixos_eval.evaluate(system, toplevel=toplevel)


def confinement_with(expr: str, toplevel: bool = False) -> nixos_eval.Evaluation:
    return ev(CONFINEMENT.with_module(expr), toplevel)


# --- every system evaluates ------------------------------------------------------

SYSTEMS = nixos_eval.systems()


@pytest.mark.parametrize("system", SYSTEMS, ids=[s.name for s in SYSTEMS])
def test_system_evaluates(system):
    result = ev(system)
    assert nixos_eval.problems(result) == []
    assert result.data["toplevelDrv"].endswith(".drv")
    assert set(system.units) <= set(result.data["unitTexts"])


def test_problems_are_seen():
    # The check above can fail: an assertion and a warning of our own both count.
    result = confinement_with(
        '{ lib, ... }: { services.qbittorrent-vpn.wireguard.configFile = lib.mkForce "/nix/store/x-wg.conf";'
        ' warnings = [ "qvn test warning" ]; }'
    )
    found = nixos_eval.problems(result)
    assert "warning: qvn test warning" in found
    assert any("wireguard.configFile must not be in the Nix store" in p for p in found)


@pytest.mark.parametrize(
    "system", [s for s in SYSTEMS if s.units], ids=[s.name for s in SYSTEMS if s.units]
)
def test_units_pass_systemd_analyze_verify(system, tmp_path):
    texts = {n: t for n, t in ev(system).data["unitTexts"].items() if n in system.units}
    assert set(texts) == set(system.units)
    proc = nixos_eval.systemd_analyze_verify(nixos_eval.write_units(texts, tmp_path))
    # Unknown keys, bad values and missing binaries all print here.
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_verify_catches_a_misspelt_directive(tmp_path):
    result = confinement_with(
        '{ systemd.services.qbittorrent-vpn.serviceConfig.NetworkNamespacePth = "/x"; }'
    )
    texts = {n: result.data["unitTexts"][n] for n in CONFINEMENT.units}
    proc = nixos_eval.systemd_analyze_verify(nixos_eval.write_units(texts, tmp_path))
    assert "Unknown key 'NetworkNamespacePth' in section [Service]" in proc.stderr


def test_example_host_was_rejected_for_its_forwarding_sysctl():
    """The fault this file exists for: one definition of the key per priority.

    NixOS's networking module defines it with mkDefault; a second mkDefault
    (what the module had) makes every real NixOS reject the system.
    """
    as_before = System(
        "a host defining the key as the module did",
        (
            '{ lib, ... }: { boot.kernel.sysctl."net.ipv4.conf.all.forwarding" = lib.mkDefault true; }',
        ),
        (),
    )
    with pytest.raises(
        EvalError, match=r"(?s)net\.ipv4\.conf\.all\.forwarding.*defined multiple times"
    ):
        ev(as_before, False)
    # The module's own definition sits above every other module's.
    assert ev(EXAMPLE).data["sysctl"]["net.ipv4.conf.all.forwarding"] is True
    nat = ev(EXAMPLE.with_module("{ networking.nat.enable = true; }", "with nat"), False)
    assert nixos_eval.problems(nat) == []


def test_forwarding_forced_off_is_refused():
    result = confinement_with(
        '{ lib, ... }: { boot.kernel.sysctl."net.ipv4.conf.all.forwarding" = lib.mkForce false; }'
    )
    assert any("forwardFromHost needs" in a for a in result.data["failedAssertions"])
    off = confinement_with("{ services.qbittorrent-vpn.webui.forwardFromHost = false; }")
    assert "net.ipv4.conf.all.forwarding" not in off.data["sysctl"] or (
        off.data["sysctl"]["net.ipv4.conf.all.forwarding"] is False
    )


# --- the watchdog unit ----------------------------------------------------------------


def test_watchdog_unit():
    result = ev(OWN_EXAMPLE)
    sc = result.data["serviceConfig"]["qbt-vpn-watchdog"]
    assert sc["Type"] == "notify"
    assert sc["Restart"] == "on-failure"
    assert isinstance(sc["WatchdogSec"], int) and sc["WatchdogSec"] > 0
    argv = sc["ExecStart"].split()
    assert argv[0].endswith("/bin/qbt-vpn-watchdog") and argv[1:3] == ["run", "--config"]
    assert argv[3] == result.probe["Watchdog"]["configFile"]
    assert sc["ExecReload"].endswith("kill -HUP $MAINPID")
    # The password reaches the service as a credential, named as the config says.
    assert sc["LoadCredential"] == ["qbittorrent-password:/run/secrets/qbittorrent-webui-password"]
    settings = result.probe["Watchdog"]["settings"]
    assert settings["qbittorrent"]["password_credential"] == "qbittorrent-password"
    assert sorted(sc["CapabilityBoundingSet"]) == ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN"]
    assert "AmbientCapabilities" not in sc
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": True,
        "PrivateTmp": True,
        "NoNewPrivileges": True,
        "RestrictNamespaces": "net",
        "MemoryDenyWriteExecute": True,
        "SystemCallArchitectures": "native",
    }.items():
        assert sc[key] == value, key
    assert sc["SystemCallFilter"][0] == "@system-service"
    # After and wanting the tunnel and qBittorrent, never bound to them: it
    # must outlive their failures to report and repair them.
    unit = unit_map(result.data["unitTexts"]["qbt-vpn-watchdog"])
    assert {TUNNEL, QBT} <= set(unit["Unit.After"]) and {TUNNEL, QBT} <= set(unit["Unit.Wants"])
    for key in ("Unit.BindsTo", "Unit.PartOf", "Unit.Requires"):
        assert key not in unit, key


def unit_map(text: str, split_all: bool = False) -> dict[str, list[str]]:
    """section.Key -> values, from a unit file: the LIST_KEYS' values split at spaces
    (every key's with ``split_all``); comment lines skipped."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith(("#", ";")):
            k, v = line.split("=", 1)
            split = split_all or k in LIST_KEYS
            out.setdefault(f"{section}.{k}", []).extend(v.split() if split else [v])
    return out


LIST_KEYS = {"After", "Before", "Wants", "Requires", "BindsTo", "PartOf", "Upholds"}


def test_watchdog_module_alone():
    result = ev(WATCHDOG)
    unit = unit_map(result.data["unitTexts"]["qbt-vpn-watchdog"])
    assert unit["Unit.After"] == ["network.target"]
    assert "LoadCredential" not in unit_map(result.data["unitTexts"]["qbt-vpn-watchdog"])
    assert "Service.LoadCredential" not in unit


def test_config_file_replaces_the_generated_one():
    result = ev(
        WATCHDOG.with_module(
            '{ services.qbt-vpn-watchdog.configFile = "/etc/qvn/watchdog.toml"; }'
        ),
        False,
    )
    sc = result.data["serviceConfig"]["qbt-vpn-watchdog"]
    assert sc["ExecStart"].split()[1:] == ["run", "--config", "/etc/qvn/watchdog.toml"]
    assert (
        "X-Restart-Triggers=/etc/qvn/watchdog.toml" in result.data["unitTexts"]["qbt-vpn-watchdog"]
    )


def test_packages_are_package_options():
    # mkPackageOption: the default is pkgs' package, and another one can be given.
    result = ev(CONFINEMENT)
    assert re.search(r"-qbittorrent-nox[^/ ]*/bin/qbittorrent-nox ",
                     result.data["serviceConfig"]["qbittorrent-vpn"]["ExecStart"])  # fmt: skip
    other = confinement_with(
        "{ pkgs, ... }: { services.qbittorrent-vpn.qbittorrent.package ="
        ' (pkgs.runCommand "qbt-other" { } "mkdir $out") // { meta.mainProgram = "qbt-other"; }; }'
    )
    assert (
        "-qbt-other/bin/qbt-other " in other.data["serviceConfig"]["qbittorrent-vpn"]["ExecStart"]
    )


def test_watchdog_sec_default_covers_three_intervals_every_timeout_and_every_action():
    from qbt_vpn_watchdog.systemd import ACTIONS_PER_CYCLE, watchdog_sec

    cfg = wconfig.Config()
    # This system has no forwarded port: the module turns port_forward off.
    timeouts = sum(cfg.check(n).timeout for n in cfg.enabled_checks() if n != "port_forward")
    actions = ACTIONS_PER_CYCLE * cfg.remediation.action_timeout
    for interval in (10, 2.5):
        result = confinement_with(
            f"{{ services.qbt-vpn-watchdog.settings.watchdog.interval = {interval}; }}"
        )
        expected = math.ceil(3 * interval + timeouts + actions)
        assert expected == watchdog_sec(interval, [timeouts], cfg.remediation.action_timeout)
        c = wconfig.parse(
            f"[watchdog]\ninterval = {interval}\n[checks.port_forward]\nenabled = false\n"
        )
        assert expected == math.ceil(stall_limit(c, c.enabled_checks()))  # one formula
        assert result.probe["Watchdog"]["watchdogSec"] == expected
        assert result.data["serviceConfig"]["qbt-vpn-watchdog"]["WatchdogSec"] == expected
    result = confinement_with(
        "{ services.qbt-vpn-watchdog.settings.checks = { exit_ip.enabled = false; dns.timeout = 13; }; }"
    )
    expected = math.ceil(
        3 * 10 + timeouts - cfg.checks.exit_ip.timeout - cfg.checks.dns.timeout + 13 + actions
    )  # fmt: skip
    assert result.probe["Watchdog"]["watchdogSec"] == expected
    result = confinement_with(
        "{ services.qbt-vpn-watchdog.settings.remediation.action_timeout = 12; }"
    )
    expected = math.ceil(3 * 10 + timeouts + ACTIONS_PER_CYCLE * 12)
    assert result.probe["Watchdog"]["watchdogSec"] == expected


OPEN = (
    "{ services.qbt-vpn-watchdog = { openFirewall = true;"
    ' settings.watchdog = { listen_port = 9100; listen_address = "100.64.1.2"; }; %s }; }'
)
ACCEPT = "-m comment --comment qbt-vpn-watchdog -j nixos-fw-accept"


def test_open_firewall_opens_the_metrics_port_only_when_asked():
    closed = ev(CONFINEMENT).probe["Firewall"]
    assert "qbt-vpn-watchdog" not in closed["extraCommands"]
    assert 9100 not in closed["allowedTCPPorts"]
    opened = confinement_with(OPEN % "").probe["Firewall"]
    # As nixpkgs' exporters: a rule in the iptables firewall, by default from anywhere.
    assert f"ip46tables -A nixos-fw -p tcp -m tcp --dport 9100 {ACCEPT}" in opened["extraCommands"]
    assert opened["allowedTCPPorts"] == closed["allowedTCPPorts"]


def test_firewall_filter_narrows_the_opening_to_one_interface():
    fw = confinement_with(OPEN % 'firewallFilter = "-i tailscale0 -p tcp -m tcp --dport 9100";')
    rules = fw.probe["Firewall"]["extraCommands"]
    assert f"ip46tables -A nixos-fw -i tailscale0 -p tcp -m tcp --dport 9100 {ACCEPT}" in rules
    assert "-A nixos-fw -p tcp" not in rules
    assert nixos_eval.problems(fw) == []


def test_firewall_rules_go_to_the_nftables_firewall():
    off = "networking.firewall.enable = false;" if nixos_eval.frozen() else ""
    nft = f"{{ networking.nftables.enable = true; {off} }}"
    default = ev(CONFINEMENT.with_module(OPEN % "").with_module(nft), False).probe["Firewall"]
    assert default["extraInputRules"].strip() == 'tcp dport 9100 accept comment "qbt-vpn-watchdog"'
    assert "qbt-vpn-watchdog" not in default["extraCommands"]
    own = 'iifname "tailscale0" tcp dport 9100 accept comment "qbt-vpn-watchdog"'
    custom = ev(
        CONFINEMENT.with_module(OPEN % f"firewallRules = ''{own}'';").with_module(nft), False
    ).probe["Firewall"]
    assert custom["extraInputRules"].strip() == own


def test_open_firewall_on_a_loopback_listener_warns():
    result = confinement_with(
        '{ services.qbt-vpn-watchdog = { openFirewall = true; settings.watchdog.listen_address = "127.0.0.1"; }; }'
    )
    (warning,) = [w for w in nixos_eval.problems(result) if "openFirewall" in w]
    assert "listen_address is 127.0.0.1: no other host can reach it" in warning


def test_a_firewall_filter_without_open_firewall_is_refused():
    result = confinement_with('{ services.qbt-vpn-watchdog.firewallFilter = "-i eth0"; }')
    assert any(
        "firewallFilter/firewallRules have no effect unless" in a
        for a in result.data["failedAssertions"]
    )


# --- settings -> TOML -> the watchdog's own loader ---------------------------------


def load_settings(settings: dict, tmp_path: Path) -> wconfig.Config:
    path = tmp_path / "qbt-vpn-watchdog.toml"
    path.write_text(to_toml(settings))
    assert tomllib.loads(path.read_text()) == settings  # the writer is faithful
    return wconfig.load(path)


def test_example_host_settings_are_a_config_the_watchdog_accepts(tmp_path):
    result = ev(EXAMPLE)
    settings = result.probe["Watchdog"]["settings"]
    cfg = load_settings(settings, tmp_path)
    assert cfg.namespace.name == "vpn"
    assert cfg.wireguard.interface == "wg0"
    assert cfg.wireguard.reader == "kernel"
    assert cfg.qbittorrent.url == "http://10.231.0.2:8080"
    assert cfg.qbittorrent.forwarded_port == 47123
    # The guards: the namespace is built by vpn-netns.sh (killswitch and ipv6 restart it),
    # and the forwarded port is checked from the host.
    assert cfg.namespace.built_by_vpn_netns is True
    assert cfg.checks.port_forward.enabled and cfg.checks.killswitch.enabled
    assert cfg.remediation.restart_command == ["systemctl", "reload-or-restart", TUNNEL]
    assert cfg.remediation.endpoint == "europe3.vpn.airdns.org:1637"
    # No secret in the settings (they end up in the world-readable store): only
    # the password file's path, which a root shell's `qbt-vpn-watchdog` reads.
    assert re.findall(r"/run/secrets/[^\"]*", json.dumps(settings)) == [
        "/run/secrets/qbittorrent-webui-password"
    ]
    # Prometheus scrapes where the watchdog listens.
    targets = result.probe["Prometheus"][0]["static_configs"][0]["targets"]
    assert targets == [f"{cfg.watchdog.listen_address}:{cfg.watchdog.listen_port}"]


def test_freeform_settings_pass_through_and_overrides_win(tmp_path):
    result = confinement_with(
        """{ services.qbt-vpn-watchdog.settings = {
             checks.exit_ip = { interval = 120; host_public_ip = "198.51.100.7"; };
             remediation.max_restarts_per_hour = 3;
             namespace.name = "other";
           }; }"""
    )
    cfg = load_settings(result.probe["Watchdog"]["settings"], tmp_path)
    assert cfg.checks.exit_ip.interval == 120
    assert cfg.checks.exit_ip.host_public_ip == "198.51.100.7"
    assert cfg.remediation.max_restarts_per_hour == 3
    assert cfg.namespace.name == "other"  # the user's value beats the module's mkDefault


def test_a_typo_in_freeform_settings_is_caught_by_the_watchdog(tmp_path):
    result = confinement_with("{ services.qbt-vpn-watchdog.settings.checks.dns.nmes = [ ]; }")
    with pytest.raises(wconfig.ConfigError, match=r"checks\.dns\.nmes: unknown key"):
        load_settings(result.probe["Watchdog"]["settings"], tmp_path)


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{ services.qbt-vpn-watchdog.settings.watchdog.mode = "enforcing"; }', "watchdog.mode"),
        ("{ services.qbt-vpn-watchdog.settings.watchdog.listen_port = 70000; }", "listen_port"),
        ("{ services.qbittorrent-vpn.forwardedPort = 0.5; }", "forwardedPort"),
        ('{ services.qbittorrent-vpn.wireguard.interface = "a-very-long-ifname"; }', "interface"),
        ('{ services.qbittorrent-vpn.tunnel = "x"; }', "does not exist"),
    ],
)
def test_typed_options_reject_bad_values(bad, message):
    with pytest.raises(EvalError, match=message):
        confinement_with(bad).data["failedAssertions"]


@pytest.mark.parametrize(
    "definition, option",
    [
        ("services.qbittorrent-vpn.wireguard.configFile", "services.qbittorrent-vpn.wireguard.configFile"),
        ("services.qbittorrent-vpn.wireguard.privateKeyFile", "services.qbittorrent-vpn.wireguard.privateKeyFile"),
        ("services.qbt-vpn-watchdog.passwordFile", "services.qbt-vpn-watchdog.passwordFile"),
    ],
)  # fmt: skip
def test_secrets_in_the_store_are_refused(definition, option):
    result = ev(
        CONFINEMENT.with_module(
            f'{{ lib, ... }}: {{ {definition} = lib.mkForce "/nix/store/aaaa-airvpn.conf"; }}'
        ),
        False,
    )
    assert f"{option} must not be in the Nix store" in " ".join(result.data["failedAssertions"])


# --- the confinement units ------------------------------------------------------------


def test_qbittorrent_unit_is_confined_and_bound_to_the_tunnel():
    result = ev(OWN_EXAMPLE)
    sc = result.data["serviceConfig"]["qbittorrent-vpn"]
    unit = unit_map(result.data["unitTexts"]["qbittorrent-vpn"])
    assert sc["NetworkNamespacePath"] == "/run/netns/vpn"
    assert unit["Unit.BindsTo"] == [TUNNEL] and TUNNEL in unit["Unit.After"]
    # DNS inside the namespace: its resolv.conf, and no host resolver socket.
    assert sc["BindReadOnlyPaths"] == ["/etc/netns/vpn/resolv.conf:/etc/resolv.conf:norbind"]
    assert "-/run/nscd" in sc["InaccessiblePaths"]
    assert "-/run/systemd/resolve/io.systemd.Resolve" in sc["InaccessiblePaths"]
    assert sc["User"] == "qbittorrent" and sc["CapabilityBoundingSet"] == ""
    assert "--torrenting-port=47123" in shlex.split(sc["ExecStart"])
    assert "--webui-port=8080" in shlex.split(sc["ExecStart"])
    assert "d /var/lib/qbittorrent-vpn 0750 qbittorrent qbittorrent -" in result.probe["Tmpfiles"]
    assert result.probe["Users"]["qbittorrent"]["isSystemUser"] is True


def test_tunnel_unit_retries_and_upholds_qbittorrent():
    result = ev(OWN_EXAMPLE)
    sc = result.data["serviceConfig"]["qbittorrent-vpn-tunnel"]
    unit = unit_map(result.data["unitTexts"]["qbittorrent-vpn-tunnel"])
    # Option-level upholds and startLimitIntervalSec, rendered by NixOS.
    assert unit["Unit.Upholds"] == [QBT]
    assert unit["Unit.StartLimitIntervalSec"] == ["0"]
    assert sc["Type"] == "oneshot" and sc["RemainAfterExit"] is True
    assert sc["Restart"] == "on-failure"
    assert "network-online.target" in unit["Unit.After"]
    assert "network-online.target" in unit["Unit.Wants"]
    assert sc["ExecStart"].endswith(" up")
    # Reload = the script's restart-tunnel, the step the lab's tunnel restart runs.
    assert sc["ExecReload"].endswith(" restart-tunnel")
    assert sc["ExecStopPost"][0].endswith(" down")
    # ip netns add must mount where everyone sees it: no private mount namespace.
    for key in (
        "ProtectSystem",
        "PrivateTmp",
        "ProtectHome",
        "PrivateDevices",
        "TemporaryFileSystem",
    ):
        assert key not in sc, key


def test_tunnel_unit_arguments_are_ones_the_shared_script_accepts():
    """The real script's argument parser on the unit's arguments.

    An unknown trailing word stops it right after parsing every option before
    it, before it touches anything: no side effects.
    """
    result = confinement_with(
        """{ services.qbittorrent-vpn = {
             wireguard = { privateKeyFile = "/run/secrets/wg.key"; mtu = 1320;
                           dns = [ "10.128.0.1" ]; address = [ "10.140.0.2/32" ]; };
             forwardedPort = 47123;
             webui.allowedRanges = [ "10.88.0.0/16" "100.64.0.0/10" ]; }; }"""
    )
    sc = result.data["serviceConfig"]["qbittorrent-vpn-tunnel"]
    for line in (sc["ExecStart"], sc["ExecReload"], sc["ExecStopPost"][0]):
        argv = shlex.split(line)
        assert argv[0].endswith("/bin/qbt-vpn-netns")
        assert argv[-1] in ("up", "down", "restart-tunnel")
        proc = subprocess.run(
            ["bash", str(SCRIPT), *argv[1:-1], "qvn-not-a-command"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        assert proc.returncode == 1
        assert proc.stderr.strip() == "vpn-netns: unknown argument: qvn-not-a-command (see --help)"
    argv = shlex.split(sc["ExecStart"])[1:]
    opts = dict(zip(argv[:-1:2], argv[1:-1:2], strict=True))
    assert opts["--netns"] == "vpn" and opts["--interface"] == "wg0"
    assert opts["--config"] == "/run/secrets/wg0.conf"
    assert opts["--private-key-file"] == "/run/secrets/wg.key"
    assert opts["--mtu"] == "1320" and opts["--dns"] == "10.128.0.1"
    assert opts["--forwarded-port"] == "47123"
    # The host end of the veth too: the watchdog probes the WebUI from it.
    assert opts["--lan-ranges"].split(",") == ["10.88.0.0/16", "100.64.0.0/10", "10.231.0.1/32"]
    assert opts["--lan-veth"] == "qbtvpn-host:qbtvpn-ns"


def test_watchdog_can_be_left_out():
    result = confinement_with("{ services.qbittorrent-vpn.watchdog.enable = false; }")
    assert result.data["missingUnits"] == ["qbt-vpn-watchdog"]


def test_enforced_qbittorrent_settings():
    result = confinement_with(
        """{ services.qbittorrent-vpn.forwardedPort = 47123;
             services.qbittorrent-vpn.qbittorrent.settings = {
             BitTorrent.Session.DefaultSavePath = "/srv/dl";
             BitTorrent.Session.Interface = "eth0";
             Preferences.WebUI.Username = "admin";
           }; }"""
    )
    s = result.probe["Confinement"]["qbittorrentSettings"]
    assert s["BitTorrent"]["Session\\DefaultSavePath"] == "/srv/dl"
    # The binding cannot be configured away.
    assert s["BitTorrent"]["Session\\Interface"] == "wg0"
    assert s["BitTorrent"]["Session\\InterfaceName"] == "wg0"
    assert s["BitTorrent"]["Session\\Port"] == 47123
    assert s["Preferences"]["WebUI\\Address"] == "10.231.0.2"
    assert s["Preferences"]["WebUI\\Port"] == 8080
    assert s["Preferences"]["WebUI\\Username"] == "admin"
    assert s["Preferences"]["Connection\\UPnP"] is False
    assert s["LegalNotice"]["Accepted"] is True


# --- the host's WebUI table and who loads it ---------------------------------------------


def test_host_ruleset_forwards_only_the_webui():
    rules = ev(EXAMPLE).probe["Confinement"]["hostRuleset"]
    assert "elements = { 10.88.0.0/16, 100.64.0.0/10 }" in rules
    assert "dnat ip to 10.231.0.2:8080" in rules
    assert 'oifname "qbtvpn-host" drop' in rules
    assert 'iifname "qbtvpn-host" drop' in rules


def test_with_the_iptables_firewall_the_tunnel_unit_loads_the_table():
    result = ev(EXAMPLE)
    sc = result.data["serviceConfig"]["qbittorrent-vpn-tunnel"]
    assert result.probe["Confinement"]["hostTableLoadedBy"] == TUNNEL
    assert len(sc["ExecStartPost"]) == 1 and " -f " in sc["ExecStartPost"][0]
    assert any(f"delete table inet {HOST_TABLE}" in x for x in sc["ExecStopPost"])
    assert result.data["nftables"]["enable"] is False


def test_with_networking_nftables_the_nftables_service_loads_the_table():
    result = ev(nixos_eval.example_with_nftables())
    sc = result.data["serviceConfig"]["qbittorrent-vpn-tunnel"]
    loaded_by = result.probe["Confinement"]["hostTableLoadedBy"]
    tables = result.probe["Nftables-Tables"]
    # The tunnel unit no longer loads it: the nftables service's flush would delete it.
    assert sc["ExecStartPost"] == []
    assert all("nft" not in x for x in sc["ExecStopPost"])
    if tables is None:  # NixOS before 23.05: no networking.nftables.tables
        assert loaded_by == "networking.nftables.ruleset"
        assert f"table inet {HOST_TABLE} {{" in result.data["nftables"]["ruleset"]
    else:
        assert loaded_by == "networking.nftables.tables"
        assert tables[HOST_TABLE]["family"] == "inet"
        assert "dnat ip to 10.231.0.2:8080" in tables[HOST_TABLE]["content"]


def test_without_host_forwarding_there_is_no_host_table():
    for system in (
        CONFINEMENT.with_module("{ services.qbittorrent-vpn.webui.forwardFromHost = false; }"),
        nixos_eval.example_with_nftables().with_module(
            "{ services.qbittorrent-vpn.webui.forwardFromHost = false; }"
        ),
    ):
        result = ev(system, False)
        sc = result.data["serviceConfig"]["qbittorrent-vpn-tunnel"]
        assert sc["ExecStartPost"] == []
        assert result.probe["Confinement"]["hostTableLoadedBy"] is None
        assert HOST_TABLE not in (result.data["nftables"]["ruleset"] or "")
        assert HOST_TABLE not in (result.probe["Nftables-Tables"] or {})


def nftables_service_file(result: nixos_eval.Evaluation) -> str:
    """What NixOS's nftables service runs at start and at every reload.

    20.09: `flush ruleset` then the ruleset; 23.05 and later: `flush ruleset`
    (flushRuleset, the default), each of networking.nftables.tables as
    `table / delete table / table { content }`, then the ruleset.
    """
    text = "flush ruleset\n"
    for table in (result.probe["Nftables-Tables"] or {}).values():
        if table.get("enable", True):
            name = f"{table['family']} {table['name']}"
            text += f"table {name}\ndelete table {name}\ntable {name} {{\n{table['content']}\n}}\n"
    return text + (result.data["nftables"]["ruleset"] or "")


NFT_RELOAD = """set -e
nft -f "$1"
nft list table inet {table} >/dev/null && echo present-after-start || echo absent-after-start
nft -f "$1"
nft list table inet {table} >/dev/null 2>&1 && echo present-after-reload || echo absent-after-reload
"""


def run_in_fresh_netns(script: str, *args: str) -> subprocess.CompletedProcess:
    """A shell script in a new, empty network namespace: the host's ruleset is never touched."""
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", script, "sh", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.root
def test_host_table_survives_the_nftables_service_reload(tmp_path):
    if shutil.which("nft") is None or shutil.which("unshare") is None:
        pytest.skip("needs nft and unshare")
    result = ev(nixos_eval.example_with_nftables())
    service = tmp_path / "nftables-service.nft"
    service.write_text(nftables_service_file(result))
    proc = run_in_fresh_netns(NFT_RELOAD.format(table=HOST_TABLE), str(service))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["present-after-start", "present-after-reload"]

    # What the module did before: the tunnel unit loaded the table beside the
    # nftables service, and the service's next reload deleted it.
    before = tmp_path / "before.nft"
    before.write_text(nftables_service_file(ev(EXAMPLE)))  # a ruleset without our table
    unit_table = tmp_path / "host.nft"
    unit_table.write_text(ev(EXAMPLE).probe["Confinement"]["hostRuleset"])
    proc = run_in_fresh_netns(
        'set -e; nft -f "$1"; nft -f "$2"; nft list table inet ' + HOST_TABLE + " >/dev/null;"
        ' nft -f "$1"; nft list table inet ' + HOST_TABLE + " >/dev/null 2>&1 && echo present || echo gone",
        str(before), str(unit_table),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["gone"]


@pytest.mark.root
def test_host_ruleset_is_valid_nftables(tmp_path):
    # `nft -c` only checks; in a fresh namespace it cannot touch the host.
    if shutil.which("nft") is None or shutil.which("unshare") is None:
        pytest.skip("needs nft and unshare")
    rules = tmp_path / "host.nft"
    # Overlapping ranges too: nft refuses them in an interval set without auto-merge.
    overlapping = confinement_with(
        '{ services.qbittorrent-vpn.webui.allowedRanges = [ "10.0.0.0/8" "10.88.0.0/16" ]; }'
    )
    for text in (overlapping.probe["Confinement"]["hostRuleset"],
                 ev(EXAMPLE).probe["Confinement"]["hostRuleset"]):  # fmt: skip
        rules.write_text(text)
        proc = run_in_fresh_netns('nft -c -f "$1"', str(rules))
        assert proc.returncode == 0, proc.stderr
    rules.write_text(rules.read_text().replace("dnat ip to", "dnat ipx to"))
    assert run_in_fresh_netns('nft -c -f "$1"', str(rules)).returncode != 0


# --- where the harness and NixOS come from ---------------------------------------------


def test_the_harness_copy_is_the_harness():
    own = nixos_eval.harness() / "eval.nix"
    if not own.is_file():
        pytest.skip(f"no harness at {own} to compare with")
    copy = nixos_eval.HARNESS_COPY.read_text()
    body = copy[copy.index("# Evaluate a NixOS system") :]
    assert body == own.read_text()


def test_a_nixpkgs_checkout_gets_no_stand_ins(monkeypatch, tmp_path):
    checkout = tmp_path / "nixpkgs"
    (checkout / "nixos" / "lib").mkdir(parents=True)
    (checkout / "nixos" / "lib" / "eval-config.nix").write_text("{ }")
    monkeypatch.setenv("NIXPKGS", str(checkout))
    assert nixos_eval.unavailable() is None
    assert not nixos_eval.frozen()
    added = nixos_eval._added_modules(nixos_eval.vm_node("storage", ()))
    assert str(nixos_eval.STAND_INS) not in added
    assert str(nixos_eval.PACKAGES_2020) not in added
    assert str(checkout / "nixos" / "modules" / "virtualisation" / "qemu-vm.nix") in added
    monkeypatch.setenv("QVN_NIXOS_EVAL", str(tmp_path / "nowhere"))
    assert nixos_eval.harness_file() == nixos_eval.HARNESS_COPY
    monkeypatch.setenv("NIXPKGS", str(tmp_path))
    assert "is not a nixpkgs checkout" in nixos_eval.unavailable()


def test_without_any_nixos_the_reason_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.delenv("NIXPKGS", raising=False)
    monkeypatch.setenv("QVN_NIXOS_EVAL", str(tmp_path))
    reason = nixos_eval.unavailable()
    assert "QVN_NIXOS_EVAL" in reason and "NIXPKGS=/path/to/nixpkgs" in reason


# --- the plain units carry the NixOS units' sandbox -------------------------------------

# What confines a unit (systemd-analyze security's subject), as opposed to what it runs
# and where its files are (Nix store paths, ReadWritePaths, how state directories are made).
SANDBOX_KEYS = frozenset(
    """User Group CapabilityBoundingSet AmbientCapabilities NoNewPrivileges ProtectSystem
    ProtectHome PrivateTmp PrivateDevices PrivateUsers PrivateNetwork ProtectKernelTunables
    ProtectKernelModules ProtectKernelLogs ProtectControlGroups ProtectClock ProtectHostname
    ProtectProc ProcSubset RestrictNamespaces RestrictRealtime RestrictSUIDSGID
    LockPersonality MemoryDenyWriteExecute RemoveIPC RestrictAddressFamilies
    SystemCallArchitectures SystemCallFilter SystemCallErrorNumber UMask NetworkNamespacePath
    BindReadOnlyPaths InaccessiblePaths LimitNOFILE TasksMax MemoryHigh MemoryMax""".split()
)
PLAIN_UNITS = ROOT / "systemd"


def sandbox_of_nixos(service_config: dict) -> dict[str, list[str]]:
    def tokens(v: object) -> list[str]:
        if isinstance(v, bool):
            return ["yes" if v else "no"]
        if isinstance(v, list):
            return [t for x in v for t in tokens(x)]
        return str(v).split()

    return {k: sorted(tokens(v)) for k, v in service_config.items() if k in SANDBOX_KEYS}


def sandbox_of_plain(text: str) -> dict[str, list[str]]:
    service = unit_map(text, split_all=True)
    return {
        k: sorted({"true": "yes", "false": "no"}.get(t, t) for t in service[f"Service.{k}"])
        for k in SANDBOX_KEYS
        if f"Service.{k}" in service
    }


@pytest.mark.parametrize("unit", ["qbittorrent-vpn-tunnel", "qbittorrent-vpn", "qbt-vpn-watchdog"])
def test_plain_units_carry_the_nixos_units_sandbox(unit):
    # The systemd VM (tests/vm, `systemd_vm`) runs the plain units under a real systemd
    # with the kernel's WireGuard; NixOS users run the module's. Same sandbox, so what
    # the VM proves for one holds for the other.
    nixos = sandbox_of_nixos(ev(OWN_EXAMPLE).data["serviceConfig"][unit])
    plain = sandbox_of_plain((PLAIN_UNITS / f"{unit}.service").read_text())
    assert plain == nixos


def test_the_sandbox_comparison_sees_a_difference():
    plain = sandbox_of_plain((PLAIN_UNITS / "qbt-vpn-watchdog.service").read_text())
    sc = dict(ev(OWN_EXAMPLE).data["serviceConfig"]["qbt-vpn-watchdog"])
    assert sandbox_of_nixos(sc) == plain
    sc["CapabilityBoundingSet"] = [*sc["CapabilityBoundingSet"], "CAP_SYS_PTRACE"]
    assert sandbox_of_nixos(sc) != plain
    sc.pop("CapabilityBoundingSet")
    assert sandbox_of_nixos(sc) != plain


DEPENDENCY_KEYS = ("Upholds", "BindsTo", "PartOf", "Requires", "Wants", "After", "Before")
OUR_UNITS = {
    f"{u}.service" for u in ("qbittorrent-vpn-tunnel", "qbittorrent-vpn", "qbt-vpn-watchdog")
}


def dependencies_among_ours(text: str) -> dict[str, list[str]]:
    deps = unit_map(text)
    return {
        k: sorted(set(deps.get(f"Unit.{k}", [])) & OUR_UNITS)
        for k in DEPENDENCY_KEYS
        if set(deps.get(f"Unit.{k}", [])) & OUR_UNITS
    }


@pytest.mark.parametrize("unit", ["qbittorrent-vpn-tunnel", "qbittorrent-vpn", "qbt-vpn-watchdog"])
def test_plain_units_depend_on_each_other_as_the_nixos_units_do(unit):
    # Found in the systemd VM: without Upholds= a tunnel that came up on a retry left
    # qBittorrent down for good (its start job had failed as a dependency).
    nixos = dependencies_among_ours(ev(OWN_EXAMPLE).data["unitTexts"][unit])
    plain = dependencies_among_ours((PLAIN_UNITS / f"{unit}.service").read_text())
    assert plain == nixos


# --- nixpkgs' services.qbittorrent confined; any unit confined (issue 25) ---------------

NIXPKGS_QBT = "qbittorrent.service"


def test_nixpkgs_qbittorrent_is_confined_through_its_own_options():
    result = ev(EXAMPLE)
    assert "qbittorrent-vpn" not in result.data["unitTexts"]  # no second qBittorrent
    sc = result.data["serviceConfig"]["qbittorrent"]
    unit = unit_map(result.data["unitTexts"]["qbittorrent"])
    assert sc["NetworkNamespacePath"] == "/run/netns/vpn"
    assert sc["BindReadOnlyPaths"] == ["/etc/netns/vpn/resolv.conf:/etc/resolv.conf:norbind"]
    assert "-/run/nscd" in sc["InaccessiblePaths"]
    assert unit["Unit.BindsTo"] == [TUNNEL] and unit["Unit.PartOf"] == [TUNNEL]
    assert TUNNEL in unit["Unit.After"]
    # nixpkgs' hardening is kept as it is.
    assert sc["PrivateUsers"] is True and sc["ProcSubset"] == "pid"
    assert sc["CapabilityBoundingSet"] == ""
    argv = shlex.split(sc["ExecStart"])
    assert "--webui-port=8080" in argv and "--torrenting-port=47123" in argv
    # Through services.qbittorrent's own options, merged with the user's serverConfig.
    q = result.probe["Qbittorrent"]
    assert q["webuiPort"] == 8080 and q["torrentingPort"] == 47123
    session = q["serverConfig"]["BitTorrent"]["Session"]
    assert session["Interface"] == "wg0" and session["InterfaceName"] == "wg0"
    assert session["Port"] == 47123
    assert session["DefaultSavePath"] == "/srv/media/downloads"  # the user's, kept
    prefs = q["serverConfig"]["Preferences"]
    assert prefs["WebUI"] == {"Address": "10.231.0.2", "Port": 8080, "Username": "admin"}
    assert prefs["Connection"]["UPnP"] is False
    # The tunnel upholds it; the watchdog starts after it and watches its WebUI on the veth.
    tunnel = unit_map(result.data["unitTexts"]["qbittorrent-vpn-tunnel"])
    assert tunnel["Unit.Upholds"] == [NIXPKGS_QBT]
    watchdog = unit_map(result.data["unitTexts"]["qbt-vpn-watchdog"])
    assert {TUNNEL, NIXPKGS_QBT} <= set(watchdog["Unit.After"])
    assert result.probe["Watchdog"]["settings"]["qbittorrent"]["url"] == "http://10.231.0.2:8080"
    assert result.probe["Confinement"]["qbtUnit"] == NIXPKGS_QBT


def test_a_binding_the_user_sets_otherwise_is_an_error_not_a_silent_choice():
    conflicting = EXAMPLE.with_module(
        '{ services.qbittorrent.serverConfig.BitTorrent.Session.Interface = "eth0"; }',
        "example host, qBittorrent bound to eth0",
    )
    with pytest.raises(EvalError, match=r"(?s)conflicting definition values"):
        ev(conflicting, False)
    port = EXAMPLE.with_module(
        "{ services.qbittorrent.webuiPort = 8082; }", "example host, another webuiPort"
    )
    with pytest.raises(EvalError, match=r"(?s)services\.qbittorrent\.webuiPort.*conflicting"):
        ev(port, False)


def test_own_unit_when_asked_even_beside_services_qbittorrent():
    result = confinement_with('{ services.qbittorrent-vpn.qbittorrent.unit = "own"; }')
    assert "qbittorrent-vpn" in result.data["unitTexts"]
    assert result.probe["Confinement"]["qbtUnit"] == QBT
    refused = confinement_with('{ services.qbittorrent-vpn.qbittorrent.unit = "nixpkgs"; }')
    assert any(
        'qbittorrent.unit = "nixpkgs" needs nixpkgs\' services.qbittorrent' in a
        for a in refused.data["failedAssertions"]
    )


def test_an_unconfined_services_qbittorrent_beside_our_unit_is_refused():
    forced = '{ lib, ... }: { services.qbittorrent-vpn.qbittorrent.unit = lib.mkForce "own"; }'
    result = ev(EXAMPLE.with_module(forced), False)
    assert any(
        "services.qbittorrent is enabled but not confined" in a
        for a in result.data["failedAssertions"]
    )


def test_a_second_unit_is_confined_beside_qbittorrent():
    result = ev(SECOND_UNIT)
    sc = result.data["serviceConfig"]["jackett"]
    unit = unit_map(result.data["unitTexts"]["jackett"])
    assert sc["NetworkNamespacePath"] == "/run/netns/vpn"
    assert sc["BindReadOnlyPaths"] == ["/etc/netns/vpn/resolv.conf:/etc/resolv.conf:norbind"]
    assert unit["Unit.BindsTo"] == [TUNNEL] and TUNNEL in unit["Unit.After"]
    tunnel = result.data["serviceConfig"]["qbittorrent-vpn-tunnel"]
    assert sorted(unit_map(result.data["unitTexts"]["qbittorrent-vpn-tunnel"])["Unit.Upholds"]) == [
        "jackett.service",
        NIXPKGS_QBT,
    ]
    # Its port is opened in the namespace's kill switch and forwarded from the host.
    argv = shlex.split(tunnel["ExecStart"])
    assert argv[argv.index("--webui-port") + 1] == "8080,9117"
    rules = result.probe["Confinement"]["hostRuleset"]
    assert "tcp dport 9117 dnat ip to 10.231.0.2:9117" in rules
    assert "dnat ip to 10.231.0.2:8080" in rules


def test_confining_a_unit_without_the_namespace_is_refused():
    result = ev(
        System(
            "a confined unit, no namespace",
            (
                str(nixos_eval.NIX_DIR / "module-confinement.nix"),
                '{ systemd.services.qvn-x = { script = "true"; qbtVpn.enable = true; }; }',
            ),
            (),
        ),
        False,
    )
    assert any(
        "systemd.services.{qvn-x}.qbtVpn.enable needs services.qbittorrent-vpn.enable" in a
        for a in result.data["failedAssertions"]
    )


def test_watchdog_for_a_vpn_confinement_namespace():
    result = ev(VPN_CONFINEMENT)
    s = result.probe["Watchdog"]["settings"]
    assert s["namespace"]["name"] == "wg"
    assert s["wireguard"] == {"interface": "wg0", "reader": "kernel"} | {
        k: v for k, v in s["wireguard"].items() if k not in ("interface", "reader")
    }
    assert s["qbittorrent"]["url"] == "http://192.168.15.1:8080"
    assert s["qbittorrent"]["forwarded_port"] == 47123
    assert s["remediation"]["restart_unit"] == "wg.service"
    unit = unit_map(result.data["unitTexts"]["qbt-vpn-watchdog"])
    assert {"wg.service", NIXPKGS_QBT} <= set(unit["Unit.After"])
    # Another namespaceAddress in vpnNamespaces is followed.
    moved = ev(
        VPN_CONFINEMENT.with_module('{ vpnNamespaces.wg.namespaceAddress = "192.168.77.1"; }'),
        False,
    )
    assert moved.probe["Watchdog"]["settings"]["qbittorrent"]["url"] == "http://192.168.77.1:8080"


def test_without_a_forwarded_port_the_port_check_is_off(tmp_path):
    result = confinement_with(
        "{ lib, ... }: { services.qbittorrent-vpn.forwardedPort = lib.mkForce null; }"
    )
    cfg = load_settings(result.probe["Watchdog"]["settings"], tmp_path)
    assert cfg.qbittorrent.forwarded_port == 0
    assert not cfg.checks.port_forward.enabled


def test_the_command_on_root_path_reads_the_services_config_and_password():
    result = ev(EXAMPLE)
    w = result.probe["Watchdog"]
    sc = result.data["serviceConfig"]["qbt-vpn-watchdog"]
    (command,) = w["commands"]
    # Ahead of the package's own bin/qbt-vpn-watchdog, should a user install that too.
    assert command["priority"] < 5
    lines = command["text"].splitlines()
    assert f"export {CONFIG_ENV}={w['configFile']}" in lines
    assert f'exec {w["package"]}/bin/qbt-vpn-watchdog "$@"' in lines
    assert sc["ExecStart"].split()[3] == w["configFile"]  # the service's own file
    # The password: the credential for the service, the same file for a root shell.
    (credential,) = sc["LoadCredential"]
    name, _, path = credential.partition(":")
    assert w["settings"]["qbittorrent"]["password_file"] == path
    assert w["settings"]["qbittorrent"]["password_credential"] == name


def test_without_a_password_file_the_config_names_none():
    settings = ev(WATCHDOG, False).probe["Watchdog"]["settings"]
    assert "password_file" not in settings.get("qbittorrent", {})


def test_log_flags_are_mirrored_as_typed_settings(tmp_path):
    result = ev(
        WATCHDOG.with_module(
            '{ services.qbt-vpn-watchdog.settings.watchdog.log_format = "json"; }'
        ),
        False,
    )
    cfg = load_settings(result.probe["Watchdog"]["settings"], tmp_path)
    assert (cfg.watchdog.log_format, cfg.watchdog.log_level) == ("json", "info")
    with pytest.raises(EvalError, match="log_format"):
        nixos_eval.evaluate(
            WATCHDOG.with_module(
                '{ services.qbt-vpn-watchdog.settings.watchdog.log_format = "xml"; }'
            ),
            False,
        )


# --- *_file options, web secrets, Prometheus rules ----------------------------------------


def watchdog_with(expr: str) -> nixos_eval.Evaluation:
    return ev(WATCHDOG.with_module(expr), False)


@pytest.mark.parametrize(
    "setting, value",
    [
        # A Nix path (unquoted) is copied into the store when the TOML is written.
        ("web.tls_key_file", str(ROOT / "tests" / "nix" / "probe.nix")),
        ("web.basic_auth_password_file", '"/nix/store/0000000000000000000000000000000a-pw"'),
        ("qbittorrent.password_file", '"/nix/store/0000000000000000000000000000000b-pw"'),
        ("checks.exit_ip.some_other_file", str(ROOT / "tests" / "nix" / "stand-ins.nix")),
    ],
)
def test_every_file_setting_in_the_store_is_refused(setting, value):
    result = watchdog_with(f"{{ services.qbt-vpn-watchdog.settings.{setting} = {value}; }}")
    failed = [a for a in result.data["failedAssertions"] if f"settings.{setting} = " in a]
    assert len(failed) == 1, result.data["failedAssertions"]
    assert "Nix store, which every user can read" in failed[0]
    assert "/run/secrets/" in failed[0]  # says what to give instead


def test_file_settings_outside_the_store_pass():
    result = watchdog_with(
        '{ services.qbt-vpn-watchdog.settings = { web.tls_key_file = "/run/secrets/key.pem";'
        ' qbittorrent.password_file = "/run/secrets/pw"; }; }'
    )
    assert result.data["failedAssertions"] == []


WEB = """{ services.qbt-vpn-watchdog.settings.web = {
  tls_cert_file = "/run/secrets/qvn-cert.pem";
  tls_key_file = "/run/secrets/qvn-key.pem";
  basic_auth_username = "prometheus";
  basic_auth_password_file = "/run/secrets/qvn-prometheus-password";
}; }"""


def test_web_secrets_reach_the_service_as_credentials(tmp_path):
    result = ev(WATCHDOG.with_module(WEB))
    assert nixos_eval.problems(result) == []
    creds = result.data["serviceConfig"]["qbt-vpn-watchdog"]["LoadCredential"]
    assert sorted(creds) == [
        "web-basic-auth-password:/run/secrets/qvn-prometheus-password",
        "web-tls-cert:/run/secrets/qvn-cert.pem",
        "web-tls-key:/run/secrets/qvn-key.pem",
    ]
    # The TOML names systemd's copies; the watchdog's loader accepts it.
    generated = result.probe["Watchdog"]["generatedSettings"]
    run = "/run/credentials/qbt-vpn-watchdog.service"
    assert generated["web"] == {
        "tls_cert_file": f"{run}/web-tls-cert",
        "tls_key_file": f"{run}/web-tls-key",
        "basic_auth_username": "prometheus",
        "basic_auth_password_file": f"{run}/web-basic-auth-password",
    }
    cfg = load_settings(generated, tmp_path)
    assert cfg.web.tls_key_file == f"{run}/web-tls-key"
    assert "/run/secrets" not in json.dumps(generated)
    texts = {"qbt-vpn-watchdog": result.data["unitTexts"]["qbt-vpn-watchdog"]}
    proc = nixos_eval.systemd_analyze_verify(nixos_eval.write_units(texts, tmp_path))
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


def _run_rules_command(result: nixos_eval.Evaluation, tmp_path: Path) -> str:
    """Build the rendered rules as Nix would, with this checkout's mixin for the store's."""
    command = result.probe["Watchdog"]["prometheusRules"]["command"]
    mixin = shutil.which("qbt-vpn-watchdog-mixin") or str(
        Path(sys.executable).with_name("qbt-vpn-watchdog-mixin")
    )
    command = re.sub(r"/nix/store/[^ ]+/bin/qbt-vpn-watchdog-mixin", mixin, command, count=1)
    out = tmp_path / "rules.yml"
    proc = subprocess.run(
        ["bash", "-c", command], env={"out": str(out), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out.read_text()


def test_the_example_host_hands_its_prometheus_the_rendered_rules(tmp_path):
    result = ev(EXAMPLE)
    rules = result.probe["Watchdog"]["prometheusRules"]
    assert result.probe["Prometheus-RuleFiles"] == [rules["file"]]
    text = _run_rules_command(result, tmp_path)
    doc = yaml.safe_load(text)
    alerts = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
    package = re.search(r"/nix/store/[^ ]+-qbt-vpn-watchdog(?=/bin/)", rules["command"]).group()
    for r in alerts:
        # The runbook the package ships, on this host.
        want = f"file://{package}/share/qbt-vpn-watchdog/docs/runbook.md#{r['alert'].lower()}"
        assert r["annotations"]["runbook_url"] == want
    if shutil.which("promtool"):
        proc = subprocess.run(
            ["promtool", "check", "rules", str(tmp_path / "rules.yml")],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_prometheus_rules_follow_the_selector_and_labels(tmp_path):
    result = ev(
        EXAMPLE.with_module(
            """{ services.qbt-vpn-watchdog.prometheusRules = {
                 selector = ''job="torrent-box"'';
                 runbookUrlPattern = "https://wiki.example.org/rb#%s";
                 labels.team = "media"; }; }""",
            "example host, rules for job torrent-box",
        ),
        False,
    )
    doc = yaml.safe_load(_run_rules_command(result, tmp_path))
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert all('job="torrent-box"' in r["expr"] for r in rules)
    for r in (r for r in rules if "alert" in r):
        assert r["labels"]["team"] == "media"
        assert (
            r["annotations"]["runbook_url"] == f"https://wiki.example.org/rb#{r['alert'].lower()}"
        )


def test_prometheus_rules_without_prometheus_on_the_host_are_refused():
    result = watchdog_with("{ services.qbt-vpn-watchdog.prometheusRules.enable = true; }")
    assert any(
        "prometheusRules.enable needs services.prometheus on this host" in a
        for a in result.data["failedAssertions"]
    )
