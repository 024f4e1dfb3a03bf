"""nix/ without NixOS: every file parses, the package follows pyproject.toml, the
qBittorrent settings merge, the VM test's script.

What NixOS makes of the modules (whole systems, units, systemd-analyze
verify, nftables) is tests/artefacts/test_nixos_eval.py, against real NixOS modules.
The package is read here with nixpkgs' real lib (from ../shared/nixos-eval or
NIXPKGS) and the stand-in package set tests/nix/stub-pkgs.nix, whose builders
return their arguments.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.support import nixos_eval

ROOT = Path(__file__).resolve().parents[2]
STUB_PKGS = ROOT / "tests" / "nix" / "stub-pkgs.nix"
SCRIPT = ROOT / "watchdog" / "qbt_vpn_watchdog" / "vpn-netns.sh"
MERGE = ROOT / "nix" / "qbittorrent-settings.py"

NIX = shutil.which("nix-instantiate")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(NIX is None, reason="needs nix-instantiate (Debian: nix-bin)")

# The confinement module's unit names.
TUNNEL = "qbittorrent-vpn-tunnel.service"
QBT = "qbittorrent-vpn.service"


def nix_files() -> list[Path]:
    skip = {".venv", ".git", "node_modules"}
    return sorted(
        p for p in ROOT.rglob("*.nix") if not skip.intersection(p.relative_to(ROOT).parts)
    )


def real_lib() -> Path:
    """nixpkgs' lib: the checkout's when NIXPKGS names one, else the frozen tree's."""
    if nixos_eval.nixpkgs_checkout() is not None:
        return nixos_eval.nixpkgs_checkout() / "lib"
    return nixos_eval.harness() / "lib" / "lib"


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
    if not (real_lib() / "default.nix").is_file():
        pytest.skip(f"needs nixpkgs' lib: {nixos_eval.unavailable() or real_lib()}")
    expr = (
        f"let lib = import {real_lib()}; pkgs = import {STUB_PKGS} {{ inherit lib; }};"
        f" p = pkgs.python3Packages.callPackage {ROOT}/nix/package.nix {{ }};"
        ' in { args = builtins.removeAttrs p.buildArgs [ "src" ]; }'
    )
    proc = subprocess.run(
        [NIX, "--eval", "--strict", "--json", "--readonly-mode", "-E", expr],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["args"]


def test_package_follows_pyproject():
    args = package_args()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert args["pname"] == project["name"]
    assert args["version"] == project["version"]
    # The runtime dependencies and the `web` extra (web.config_file), shipped in the package.
    deps = project["dependencies"] + project["optional-dependencies"]["web"]
    wanted = {re.split(r"[<>=!~ \[]", d)[0].lower() for d in deps}
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
    assert "watchdog/qbt_vpn_watchdog/vpn-netns.sh" in args["postInstall"]
    assert "bin/qbt-vpn-netns" in args["postInstall"]
    assert SCRIPT.exists(), "watchdog/qbt_vpn_watchdog/vpn-netns.sh is what the package installs"
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    assert "vpn-netns.sh" in data["qbt_vpn_watchdog"]


def test_package_ships_the_mixin_where_the_wheel_does():
    # share/qbt-vpn-watchdog/<dir>/<file>, as pyproject.toml's data-files lay it
    # out for the wheel (qbt_vpn_watchdog/mixin/ looks there).
    text = (ROOT / "nix" / "package.nix").read_text()
    post = package_args()["postInstall"]
    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "data-files"
    ]
    assert len(data_files) >= 4
    for dest, sources in data_files.items():
        for source in sources:
            assert list(ROOT.glob(source)), source
            assert f"-t $out/{dest} {source}" in post or f"-t $out/{dest} " in post, (
                f"{source} not installed under {dest}"
            )
            assert source in post, f"{source} not installed"
            # The wheel build reads it: the source fileset must hold it.
            top = source.split("/")[0]
            assert f"../{top}\n" in text or f"../{source}\n" in text, f"{source} not in the fileset"


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


# --- qBittorrent's enforced settings -----------------------------------------------


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


def test_vm_test_names_only_catalogued_metrics():
    from qbt_vpn_watchdog import metrics

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
