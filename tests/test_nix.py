"""nix/: every file parses, the modules evaluate offline, their units pass systemd-analyze.

There is no <nixpkgs> here, so the modules are evaluated against
tests/nix/stub-lib.nix (the few lib functions and module-system rules they
use, with nixpkgs' meaning) by tests/nix/eval.nix. Each enabled systemd
service is rendered to a unit file the way NixOS does (lists become repeated
keys) and checked with `systemd-analyze verify`, whose unknown-key complaints
are only warnings: any line on stderr fails the test. The watchdog settings
the modules produce are written as TOML and loaded with watchdog.config.load,
so the modules can only produce configs the watchdog accepts.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from watchdog import config as wconfig

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT / "tests" / "nix" / "eval.nix"
SCRIPT = ROOT / "watchdog" / "vpn-netns.sh"
MERGE = ROOT / "nix" / "qbittorrent-settings.py"

NIX = shutil.which("nix-instantiate")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(NIX is None, reason="needs nix-instantiate (Debian: nix-bin)")

# The confinement module's unit names (the watchdog's restart_unit is one).
TUNNEL = "qbittorrent-vpn-tunnel.service"
QBT = "qbittorrent-vpn.service"

BASE_TEMPLATE = """{{
  services.qbittorrent-vpn = {{
    enable = true;
    wireguard.configFile = "{config_file}";
    wireguard.privateKeyFile = {key_file};
    forwardedPort = 47123;
    webui.allowedRanges = [ "10.88.0.0/16" "100.64.0.0/10" ];
  }};
  services.qbt-vpn-watchdog.passwordFile = "{password_file}";
}}"""


def base_config(
    config_file: str = "/run/secrets/airvpn-wg0.conf",
    key_file: str | None = None,
    password_file: str = "/run/secrets/qbittorrent-webui-password",
) -> str:
    key = "null" if key_file is None else f'"{key_file}"'
    return BASE_TEMPLATE.format(config_file=config_file, key_file=key, password_file=password_file)


BASE = base_config()


# --- helpers ------------------------------------------------------------------


def nix_files() -> list[Path]:
    skip = {".venv", ".git", "node_modules"}
    return sorted(
        p for p in ROOT.rglob("*.nix") if not skip.intersection(p.relative_to(ROOT).parts)
    )


def evaluate(config: str = BASE, modules: str = "[ ../../nix/module-confinement.nix ]") -> dict:
    """The harness's JSON for these modules and this config (a Nix expression)."""
    proc = subprocess.run(
        [NIX, "--eval", "--strict", "--json", "--readonly-mode", str(EVAL),
         "--arg", "modules", modules, "--arg", "config", config],
        capture_output=True, text=True, timeout=120, cwd=EVAL.parent,
    )  # fmt: skip
    if proc.returncode != 0:
        raise EvalError(proc.stderr)
    return json.loads(proc.stdout)


class EvalError(Exception):
    pass


def with_config(extra: str) -> str:
    """BASE plus more definitions (merged by the module system)."""
    return f"{{ imports = [ ({BASE}) ({extra}) ]; }}"


def render_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


# NixOS's unit options -> [Unit]/[Install] keys.
UNIT_LISTS = {
    "after": "After", "before": "Before", "wants": "Wants", "requires": "Requires",
    "requisite": "Requisite", "bindsTo": "BindsTo", "partOf": "PartOf",
    "upholds": "Upholds", "conflicts": "Conflicts",
}  # fmt: skip
INSTALL_LISTS = {"wantedBy": "WantedBy", "requiredBy": "RequiredBy", "upheldBy": "UpheldBy"}
# Options whose default the renderer does not implement: a module using them
# must extend render_unit first instead of being silently half-rendered.
UNRENDERED_DEFAULTS = {"script": "", "preStart": "", "postStart": "", "environment": {}, "path": []}


def render_unit(name: str, svc: dict) -> str:
    for key, default in UNRENDERED_DEFAULTS.items():
        assert svc[key] == default, f"{name}: render_unit does not handle {key!r} yet"
    unit: list[tuple[str, object]] = []
    if svc["description"]:
        unit.append(("Description", svc["description"]))
    if svc["documentation"]:
        unit.append(("Documentation", " ".join(svc["documentation"])))
    for opt, key in UNIT_LISTS.items():
        if svc[opt]:
            unit.append((key, " ".join(svc[opt])))
    if svc["startLimitBurst"] is not None:
        unit.append(("StartLimitBurst", svc["startLimitBurst"]))
    if svc["startLimitIntervalSec"] is not None:
        unit.append(("StartLimitIntervalSec", svc["startLimitIntervalSec"]))
    for trigger in svc["restartTriggers"]:
        unit.append(("X-Restart-Triggers", trigger))
    unit.extend(svc["unitConfig"].items())
    lines = ["[Unit]"] + expand(unit) + ["", "[Service]"] + expand(svc["serviceConfig"].items())
    install = [(key, " ".join(svc[opt])) for opt, key in INSTALL_LISTS.items() if svc[opt]]
    if install:
        lines += ["", "[Install]"] + expand(install)
    return "\n".join(lines) + "\n"


def expand(items) -> list[str]:
    out = []
    for key, value in items:
        for v in value if isinstance(value, list) else [value]:
            out.append(f"{key}={render_value(v)}")
    return out


def unit_map(text: str) -> dict[str, list[str]]:
    """section.Key -> values, from a rendered unit."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(f"{section}.{k}", []).append(v)
    return out


def verify_units(services: dict, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """Render all units into tmp_path, stub their store paths, run systemd-analyze verify."""
    units = tmp_path / "units"
    units.mkdir()
    store = tmp_path / "store"
    texts = {}
    for name, svc in services.items():
        text = render_unit(name, svc).replace("/nix/store/", f"{store}/")
        texts[name] = text
        (units / f"{name}.service").write_text(text)
        for line in text.splitlines():
            if line.startswith("Exec"):
                binary = line.split("=", 1)[1].lstrip("-@:+!").split()[0]
                p = Path(binary)
                if p.is_relative_to(store) and not p.exists():
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_text("#!/bin/sh\nexit 0\n")
                    p.chmod(0o755)
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *sorted(str(p) for p in units.iterdir())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stderr, texts


def to_toml(data: dict) -> str:
    """JSON-shaped data -> TOML, as nixpkgs' formats.toml (remarshal) writes it."""
    lines: list[str] = []

    def scalar(v: object) -> str:
        if v is None:
            raise ValueError("TOML has no null: the module produced a null setting")
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise ValueError(f"cannot write {v!r}")

    def table(prefix: str, d: dict) -> None:
        plain = {k: v for k, v in d.items() if not isinstance(v, dict)}
        if prefix and (plain or not d):
            lines.append(f"[{prefix}]")
        for k, v in plain.items():
            lines.append(f"{k} = {scalar(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    return "\n".join(lines) + "\n"


def load_settings(settings: dict, tmp_path: Path) -> wconfig.Config:
    path = tmp_path / "qbt-vpn-watchdog.toml"
    path.write_text(to_toml(settings))
    assert tomllib.loads(path.read_text()) == settings  # the writer is faithful
    return wconfig.load(path)


# --- every file parses ----------------------------------------------------------


def test_every_nix_file_parses():
    files = nix_files()
    names = {str(p.relative_to(ROOT)) for p in files}
    assert {
        "flake.nix",
        "nix/default.nix",
        "nix/package.nix",
        "nix/module-watchdog.nix",
        "nix/module-confinement.nix",
        "nix/example-host.nix",
        "nix/tests/vm-test.nix",
    } <= names
    for p in files:
        proc = subprocess.run([NIX, "--parse", str(p)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"{p}: {proc.stderr}"


# --- the package --------------------------------------------------------------


def package_args() -> dict:
    expr = (
        "let lib = import ./stub-lib.nix; pkgs = import ./stub-pkgs.nix { inherit lib; };"
        " p = pkgs.python3Packages.callPackage ../../nix/package.nix { };"
        ' in { args = builtins.removeAttrs p.buildArgs [ "src" ]; }'
    )
    proc = subprocess.run(
        [NIX, "--eval", "--strict", "--json", "--readonly-mode", "-E", expr],
        capture_output=True, text=True, timeout=60, cwd=EVAL.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["args"]


def test_package_follows_pyproject():
    args = package_args()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert args["pname"] == project["name"]
    assert args["version"] == project["version"]
    wanted = {re.split(r"[<>=!~ \[]", d)[0].lower() for d in project["dependencies"]}
    have = {d.removeprefix("/nix/store/stub-") for d in args["dependencies"]}
    assert have == wanted
    assert args["pyproject"] is True
    assert [Path(x).name for x in args["build-system"]] == ["stub-setuptools"]
    test_deps = {Path(x).name.removeprefix("stub-") for x in args["nativeCheckInputs"]}
    assert {"pytestCheckHook", "hypothesis"} <= test_deps
    # Root and lab tests cannot run in the build sandbox.
    flags = " ".join(args["pytestFlagsArray"])
    assert "not root" in flags and "not lab" in flags
    assert args["meta"]["mainProgram"] in project["scripts"]


def test_package_installs_the_shared_bringup_script():
    args = package_args()
    assert "watchdog/vpn-netns.sh" in args["postInstall"]
    assert "bin/qbt-vpn-netns" in args["postInstall"]
    assert SCRIPT.exists(), "watchdog/vpn-netns.sh is what the package installs"
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    assert "vpn-netns.sh" in data["watchdog"]


def test_package_ships_the_rules_the_example_and_the_dashboard():
    text = (ROOT / "nix" / "package.nix").read_text()
    post = package_args()["postInstall"]
    for path in (
        "alerts/qbt-vpn-watchdog.rules.yml",
        "alerts/alertmanager.yml",
        "dashboards/qbt-vpn-watchdog.json",
    ):
        assert (ROOT / path).exists(), path
        assert f" {path}" in post, f"{path} not installed"
        assert f"../{path.split('/')[0]}\n" in text, f"{path} not in the source fileset"


# The commands the bring-up script runs, and the package providing each.
SCRIPT_TOOLS = {
    "ip": "iproute2",
    "wg": "wireguard-tools",
    "nft": "nftables",
    "awk": "gawk",
    "sed": "gnused",
    "grep": "gnugrep",
    "tr": "coreutils",
    "mktemp": "coreutils",
    "seq": "coreutils",
}


def test_package_wraps_the_script_with_every_tool_it_runs():
    wrapper_path = package_args()["postInstall"].split("--prefix PATH : ", 1)[1]
    provided = {d.split("/")[3].removeprefix("stub-") for d in wrapper_path.split(":")}
    code = "\n".join(
        line for line in SCRIPT.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    used = {tool for tool in SCRIPT_TOOLS if re.search(rf"(^|[\s|;(&!]){tool} ", code, re.M)}
    assert {"ip", "wg", "nft", "awk"} <= used  # the pattern finds commands
    assert {SCRIPT_TOOLS[t] for t in used} <= provided


def test_package_source_holds_what_setuptools_reads():
    text = (ROOT / "nix" / "package.nix").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for needed in ("pyproject.toml", project["readme"], "watchdog", "tests"):
        assert f"../{needed}\n" in text, needed


# --- the watchdog module ----------------------------------------------------------


def test_watchdog_unit(tmp_path):
    out = evaluate()
    svc = out["services"]["qbt-vpn-watchdog"]
    sc = svc["serviceConfig"]
    assert sc["Type"] == "notify"
    assert sc["Restart"] == "on-failure"
    assert isinstance(sc["WatchdogSec"], int) and sc["WatchdogSec"] > 0
    assert sc["ExecStart"].split()[1:3] == ["run", "--config"]
    assert sc["ExecStart"].split()[0].endswith("/bin/qbt-vpn-watchdog")
    assert sc["ExecReload"].endswith("kill -HUP $MAINPID")
    # The password reaches the service as a credential, named as the config says.
    assert sc["LoadCredential"] == ["qbittorrent-password:/run/secrets/qbittorrent-webui-password"]
    assert out["watchdogSettings"]["qbittorrent"]["password_credential"] == "qbittorrent-password"
    # Exactly the capabilities it needs, nothing ambient.
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
    assert sc["RestrictAddressFamilies"] == ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]
    assert sc["SystemCallFilter"][0] == "@system-service"
    # Ordered after, and wanting, the tunnel and qBittorrent, but not bound to
    # them: it must outlive their failures to report and repair them.
    assert {TUNNEL, QBT} <= set(svc["after"]) and {TUNNEL, QBT} <= set(svc["wants"])
    assert svc["bindsTo"] == [] and svc["partOf"] == [] and svc["requires"] == []
    assert svc["wantedBy"] == ["multi-user.target"]


def test_setns_is_allowed_by_the_syscall_filter():
    # The watchdog enters the namespace with setns(); @system-service must hold it.
    if SYSTEMD_ANALYZE is None:
        pytest.skip("needs systemd-analyze")
    out = subprocess.run(
        [SYSTEMD_ANALYZE, "syscall-filter", "@system-service"], capture_output=True, text=True
    ).stdout
    assert re.search(r"^\s+setns$", out, re.M) or "@process" in out
    process = subprocess.run(
        [SYSTEMD_ANALYZE, "syscall-filter", "@process"], capture_output=True, text=True
    ).stdout
    privileged = subprocess.run(
        [SYSTEMD_ANALYZE, "syscall-filter", "@privileged", "@resources"],
        capture_output=True,
        text=True,
    ).stdout
    assert re.search(r"^\s+setns$", process, re.M)
    assert not re.search(r"^\s+setns$", privileged, re.M)


def test_watchdog_sec_default_covers_three_intervals_and_every_timeout():
    # The module's table of check timeouts must match config.py's defaults.
    cfg = wconfig.Config()
    timeouts = sum(cfg.check(n).timeout for n in cfg.enabled_checks())
    for interval in (10, 2.5, 60):
        out = evaluate(
            with_config(f"{{ services.qbt-vpn-watchdog.settings.watchdog.interval = {interval}; }}")
        )
        expected = math.ceil(3 * interval + timeouts + cfg.remediation.action_timeout)
        assert out["watchdogSec"] == expected
        assert out["services"]["qbt-vpn-watchdog"]["serviceConfig"]["WatchdogSec"] == expected
    # A disabled check's timeout no longer counts; a longer one does.
    out = evaluate(
        with_config(
            "{ services.qbt-vpn-watchdog.settings.checks = "
            "{ exit_ip.enabled = false; dns.timeout = 13; }; }"
        )
    )
    exp = math.ceil(
        3 * 10 + timeouts - cfg.checks.exit_ip.timeout - cfg.checks.dns.timeout + 13 + 30
    )
    assert out["watchdogSec"] == exp
    out = evaluate(with_config("{ services.qbt-vpn-watchdog.watchdogSec = 42; }"))
    assert out["services"]["qbt-vpn-watchdog"]["serviceConfig"]["WatchdogSec"] == 42


def test_open_firewall_opens_the_metrics_port_only_when_asked():
    assert evaluate()["firewall"]["allowedTCPPorts"] == []
    out = evaluate(
        with_config(
            "{ services.qbt-vpn-watchdog = { openFirewall = true;"
            ' settings.watchdog = { listen_port = 9100; listen_address = "100.64.1.2"; }; }; }'
        )
    )
    assert out["firewall"]["allowedTCPPorts"] == [9100]


def test_watchdog_module_alone():
    out = evaluate(
        '{ services.qbt-vpn-watchdog = { enable = true; settings.namespace.name = "vpn"; }; }',
        modules="[ ../../nix/module-watchdog.nix ]",
    )
    svc = out["services"]["qbt-vpn-watchdog"]
    assert svc["after"] == ["network.target"]
    assert svc["serviceConfig"]["LoadCredential"] == []
    assert set(out["services"]) == {"qbt-vpn-watchdog"}


# --- settings -> TOML -> the watchdog's own loader --------------------------------


def test_settings_are_a_config_the_watchdog_accepts(tmp_path):
    out = evaluate()
    cfg = load_settings(out["watchdogSettings"], tmp_path)
    # Matching the confinement: the namespace, the interface, the WebUI over
    # the veth, the forwarded port and the unit tier-2 remediation restarts.
    assert cfg.namespace.name == "vpn"
    assert cfg.wireguard.interface == "wg0"
    assert cfg.wireguard.reader == "kernel"
    assert cfg.qbittorrent.url == "http://10.231.0.2:8080"
    assert cfg.qbittorrent.forwarded_port == 47123
    assert cfg.remediation.restart_command == ["systemctl", "reload-or-restart", TUNNEL]
    assert cfg.watchdog.listen_port == wconfig.DEFAULT_PORT
    assert cfg.watchdog.listen_address == "127.0.0.1"
    # No secret in the settings (they end up in the world-readable store).
    assert "/run/secrets" not in json.dumps(out["watchdogSettings"])


def test_freeform_settings_pass_through_and_overrides_win(tmp_path):
    out = evaluate(
        with_config(
            """{ services.qbt-vpn-watchdog.settings = {
                 checks.exit_ip = { interval = 120; host_public_ip = "198.51.100.7"; };
                 remediation.max_restarts_per_hour = 3;
                 namespace.name = "other";
                 qbittorrent.url = "http://10.231.0.2:8080";
               }; }"""
        )
    )
    cfg = load_settings(out["watchdogSettings"], tmp_path)
    assert cfg.checks.exit_ip.interval == 120
    assert cfg.checks.exit_ip.host_public_ip == "198.51.100.7"
    assert cfg.remediation.max_restarts_per_hour == 3
    assert cfg.namespace.name == "other"  # the user's value beats the module's mkDefault


def test_a_typo_in_freeform_settings_is_caught_by_the_watchdog(tmp_path):
    out = evaluate(with_config("{ services.qbt-vpn-watchdog.settings.checks.dns.nmes = [ ]; }"))
    with pytest.raises(wconfig.ConfigError, match=r"checks\.dns\.nmes: unknown key"):
        load_settings(out["watchdogSettings"], tmp_path)


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
        evaluate(with_config(bad))


@pytest.mark.parametrize(
    "secret, option",
    [
        ("config_file", "services.qbittorrent-vpn.wireguard.configFile"),
        ("key_file", "services.qbittorrent-vpn.wireguard.privateKeyFile"),
        ("password_file", "services.qbt-vpn-watchdog.passwordFile"),
    ],
)
def test_secrets_in_the_store_are_refused(secret, option):
    with pytest.raises(EvalError, match=re.escape(f"{option} must not be in the Nix store")):
        evaluate(base_config(**{secret: "/nix/store/aaaa-airvpn.conf"}))


# --- the confinement units ----------------------------------------------------------


def test_units_pass_systemd_analyze_verify(tmp_path):
    if SYSTEMD_ANALYZE is None:
        pytest.skip("needs systemd-analyze")
    out = evaluate()
    assert set(out["services"]) == {"qbt-vpn-watchdog", "qbittorrent-vpn", "qbittorrent-vpn-tunnel"}
    stderr, texts = verify_units(out["services"], tmp_path)
    # Unknown keys, bad values and missing binaries all print here.
    assert stderr.strip() == "", stderr
    for text in texts.values():
        assert "Exec" in text


def test_verify_catches_a_misspelt_directive(tmp_path):
    # The check above can fail: a wrong key is reported on stderr.
    if SYSTEMD_ANALYZE is None:
        pytest.skip("needs systemd-analyze")
    out = evaluate(
        with_config(
            '{ systemd.services.qbittorrent-vpn.serviceConfig.NetworkNamespacePth = "/x"; }'
        )
    )
    stderr, _ = verify_units(out["services"], tmp_path)
    assert "Unknown key 'NetworkNamespacePth'" in stderr


def test_qbittorrent_unit_is_confined_and_bound_to_the_tunnel(tmp_path):
    out = evaluate()
    svc = out["services"]["qbittorrent-vpn"]
    sc = svc["serviceConfig"]
    assert sc["NetworkNamespacePath"] == "/run/netns/vpn"
    assert svc["bindsTo"] == [TUNNEL] and TUNNEL in svc["after"]
    assert svc["wantedBy"] == ["multi-user.target"]
    # DNS inside the namespace: its resolv.conf, and no host resolver socket.
    assert sc["BindReadOnlyPaths"] == ["/etc/netns/vpn/resolv.conf:/etc/resolv.conf:norbind"]
    assert "-/run/nscd" in sc["InaccessiblePaths"]
    assert "-/run/systemd/resolve/io.systemd.Resolve" in sc["InaccessiblePaths"]
    assert sc["User"] == "qbittorrent" and sc["CapabilityBoundingSet"] == ""
    assert "--torrenting-port=47123" in sc["ExecStart"].split()
    assert "--webui-port=8080" in sc["ExecStart"].split()
    assert out["tmpfiles"] == ["d /var/lib/qbittorrent-vpn 0750 qbittorrent qbittorrent -"]
    assert out["users"]["users"]["qbittorrent"]["isSystemUser"] is True


def test_tunnel_unit_retries_and_upholds_qbittorrent():
    out = evaluate()
    svc = out["services"]["qbittorrent-vpn-tunnel"]
    sc = svc["serviceConfig"]
    assert sc["Type"] == "oneshot" and sc["RemainAfterExit"] is True
    assert sc["Restart"] == "on-failure"
    assert svc["unitConfig"] == {"Upholds": QBT, "StartLimitIntervalSec": 0}
    assert "network-online.target" in svc["after"] and "network-online.target" in svc["wants"]
    assert svc["wantedBy"] == ["multi-user.target"]
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
    assert out["sysctl"] == {"net.ipv4.conf.all.forwarding": True}
    assert out["etc"] == {}  # resolv.conf is the script's, written from the AirVPN config


def script_args(command_line: str) -> list[str]:
    import shlex

    argv = shlex.split(command_line)
    assert argv[0].endswith("/bin/qbt-vpn-netns")
    return argv[1:]


def test_tunnel_unit_arguments_are_ones_the_shared_script_accepts():
    """Run the real script's argument parser on the unit's arguments.

    An unknown trailing word makes it stop right after parsing every option
    before it, before it touches anything: so this has no side effects.
    """
    out = evaluate(
        f"""{{ imports = [ ({base_config(key_file="/run/secrets/wg.key")}) ];
             services.qbittorrent-vpn.wireguard = {{
               mtu = 1320; dns = [ "10.128.0.1" ]; address = [ "10.140.0.2/32" ]; }}; }}"""
    )
    sc = out["services"]["qbittorrent-vpn-tunnel"]["serviceConfig"]
    for line in (sc["ExecStart"], sc["ExecReload"], sc["ExecStopPost"][0]):
        argv = script_args(line)
        assert argv[-1] in ("up", "down", "restart-tunnel")
        proc = subprocess.run(
            ["bash", str(SCRIPT), *argv[:-1], "qvn-not-a-command"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        assert proc.returncode == 1
        assert proc.stderr.strip() == "vpn-netns: unknown argument: qvn-not-a-command (see --help)"
    argv = script_args(sc["ExecStart"])
    opts = dict(zip(argv[:-1:2], argv[1:-1:2], strict=True))
    assert opts["--netns"] == "vpn" and opts["--interface"] == "wg0"
    assert opts["--config"] == "/run/secrets/airvpn-wg0.conf"
    assert opts["--private-key-file"] == "/run/secrets/wg.key"
    assert opts["--mtu"] == "1320" and opts["--dns"] == "10.128.0.1"
    assert opts["--forwarded-port"] == "47123"
    # The host end of the veth is allowed too: the watchdog probes the WebUI from it.
    assert opts["--lan-ranges"].split(",") == ["10.88.0.0/16", "100.64.0.0/10", "10.231.0.1/32"]
    assert opts["--lan-veth"] == "qbtvpn-host:qbtvpn-ns"


def test_host_ruleset_forwards_only_the_webui():
    rules = evaluate()["confinement"]["hostRuleset"]
    assert "elements = { 10.88.0.0/16, 100.64.0.0/10 }" in rules
    assert "dnat ip to 10.231.0.2:8080" in rules
    assert 'oifname "qbtvpn-host" drop' in rules
    assert 'iifname "qbtvpn-host" drop' in rules


@pytest.mark.root
def test_host_ruleset_is_valid_nftables(tmp_path):
    # `nft -c` only checks; in a fresh anonymous namespace it cannot touch the host.
    if shutil.which("nft") is None or shutil.which("unshare") is None:
        pytest.skip("needs nft and unshare")
    rules = tmp_path / "host.nft"
    # Overlapping ranges too: nft refuses them in an interval set without auto-merge.
    overlapping = with_config(
        '{ services.qbittorrent-vpn.webui.allowedRanges = [ "10.0.0.0/8" "10.88.0.0/16" ]; }'
    )
    rules.write_text(evaluate(overlapping)["confinement"]["hostRuleset"])
    proc = subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", str(rules)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    rules.write_text(evaluate()["confinement"]["hostRuleset"])
    proc = subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", str(rules)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    rules.write_text(rules.read_text().replace("dnat ip to", "dnat ipx to"))
    proc = subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", str(rules)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0


def test_without_host_forwarding_there_is_no_host_table():
    out = evaluate(with_config("{ services.qbittorrent-vpn.webui.forwardFromHost = false; }"))
    sc = out["services"]["qbittorrent-vpn-tunnel"]["serviceConfig"]
    assert sc["ExecStartPost"] == []
    assert all("nft" not in x for x in sc["ExecStopPost"])
    assert out["sysctl"] == {}


def test_watchdog_can_be_left_out():
    out = evaluate(with_config("{ services.qbittorrent-vpn.watchdog.enable = false; }"))
    assert "qbt-vpn-watchdog" not in out["services"]


# --- qBittorrent's enforced settings -----------------------------------------------


def test_enforced_qbittorrent_settings():
    out = evaluate(
        with_config(
            """{ services.qbittorrent-vpn.qbittorrent.settings = {
                 BitTorrent.Session.DefaultSavePath = "/srv/dl";
                 BitTorrent.Session.Interface = "eth0";
                 Preferences.WebUI.Username = "admin";
               }; }"""
        )
    )
    s = out["confinement"]["qbittorrentSettings"]
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


def run_merge(tmp_path: Path, conf: str | None, settings: dict) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    sfile = tmp_path / "settings.json"
    sfile.write_text(json.dumps(settings))
    target = tmp_path / "profile" / "qBittorrent" / "config" / "qBittorrent.conf"
    if conf is not None:
        target.parent.mkdir(parents=True)
        target.write_text(conf)
    proc = subprocess.run(
        [shutil.which("python3") or "python3", str(MERGE), str(sfile), str(target)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (target.stat().st_mode & 0o777) == 0o600
    return target.read_text()


def test_settings_merge_keeps_other_keys(tmp_path):
    existing = (
        "[BitTorrent]\n"
        "Session\\DefaultSavePath=/srv/dl\n"
        "Session\\Interface=eth0\n"
        "\n"
        "[Preferences]\n"
        'WebUI\\Password_PBKDF2="@ByteArray(AAEC:Ub8x==)"\n'
        "WebUI\\Port=9999\n"
        "\n"
        "[Meta]\n"
        "MigrationVersion=4\n"
    )
    settings = {
        "BitTorrent": {"Session\\Interface": "wg0", "Session\\Port": 47123},
        "Preferences": {"WebUI\\Port": 8080, "Connection\\UPnP": False},
        "LegalNotice": {"Accepted": True},
    }
    text = run_merge(tmp_path, existing, settings)
    assert text == (
        "[BitTorrent]\n"
        "Session\\DefaultSavePath=/srv/dl\n"
        "Session\\Interface=wg0\n"
        "Session\\Port=47123\n"
        "\n"
        "[Preferences]\n"
        'WebUI\\Password_PBKDF2="@ByteArray(AAEC:Ub8x==)"\n'
        "WebUI\\Port=8080\n"
        "Connection\\UPnP=false\n"
        "\n"
        "[Meta]\n"
        "MigrationVersion=4\n"
        "\n"
        "[LegalNotice]\n"
        "Accepted=true\n"
    )
    # Idempotent: a second start changes nothing.
    assert run_merge(tmp_path / "again", text, settings) == text


def test_settings_merge_creates_the_file(tmp_path):
    text = run_merge(tmp_path, None, {"LegalNotice": {"Accepted": True}})
    assert text == "\n[LegalNotice]\nAccepted=true\n"


# --- example host and VM test ---------------------------------------------------------


def test_example_host_evaluates(tmp_path):
    out = evaluate("{ }", modules="[ ../../nix/example-host.nix ]")
    assert set(out["services"]) == {"qbt-vpn-watchdog", "qbittorrent-vpn", "qbittorrent-vpn-tunnel"}
    cfg = load_settings(out["watchdogSettings"], tmp_path)
    assert cfg.qbittorrent.forwarded_port == 47123
    assert cfg.remediation.endpoint == "europe3.vpn.airdns.org:1637"
    # Prometheus scrapes where the watchdog listens.
    targets = out["prometheus"][0]["static_configs"][0]["targets"]
    assert targets == [f"{cfg.watchdog.listen_address}:{cfg.watchdog.listen_port}"]
    ranges = script_args(out["services"]["qbittorrent-vpn-tunnel"]["serviceConfig"]["ExecStart"])
    assert "10.88.0.0/16,100.64.0.0/10" in ",".join(ranges)
    if SYSTEMD_ANALYZE is not None:
        stderr, _ = verify_units(out["services"], tmp_path)
        assert stderr.strip() == "", stderr


def test_vm_test_names_only_catalogued_metrics():
    from watchdog import metrics

    text = (ROOT / "nix" / "tests" / "vm-test.nix").read_text()
    used = set(re.findall(r"\b(qbtvpn_[a-z_]+)", text))
    assert used, "the VM test reads the watchdog's metrics"
    known = {m.name for m in metrics.CATALOGUE}
    # Info metrics are exposed with an _info suffix by prometheus_client.
    known |= {n + "_info" for n in known}
    assert used <= known, used - known


def test_vm_test_script_is_valid_python():
    """The testScript compiles, and names only what the NixOS test driver defines."""
    import ast
    import builtins

    proc = subprocess.run(
        [NIX, "--eval", "--strict", "--json", "--readonly-mode", "-E",
         f"(import {ROOT}/nix/tests/vm-test.nix).testScript"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    script = json.loads(proc.stdout)
    tree = ast.parse(script, "vm-test.nix:testScript")
    driver = {"start_all", "subtest", "airvpn", "storage", "lan"}
    defined = driver | set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.Import, ast.ImportFrom)):
            names = (
                [node.name]
                if isinstance(node, ast.FunctionDef)
                else [a.asname or a.name for a in node.names]
            )
            defined.update(names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    loaded = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }
    assert loaded <= defined, loaded - defined
    nodes = subprocess.run(
        [NIX, "--eval", "--strict", "--json", "--readonly-mode", "-E",
         f"builtins.attrNames (import {ROOT}/nix/tests/vm-test.nix).nodes"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert set(json.loads(nodes.stdout)) == driver - {"start_all", "subtest"}


def test_vm_test_uses_the_modules_unit_names():
    text = (ROOT / "nix" / "tests" / "vm-test.nix").read_text()
    for unit in (TUNNEL, QBT, "qbt-vpn-watchdog.service"):
        assert unit in text
    assert "../module-confinement.nix" in text


if os.environ.get("QVN_DEBUG_UNITS"):  # pragma: no cover - a helper for humans

    def test_print_units(tmp_path):
        for name, svc in evaluate()["services"].items():
            print(render_unit(name, svc))
