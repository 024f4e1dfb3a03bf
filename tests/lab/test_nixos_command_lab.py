"""On NixOS, `qbt-vpn-watchdog check` in a root shell uses the service's config and
password with no argument (issue #22): the example host evaluated with real NixOS
(../shared/nixos-eval), its settings pointed at the lab and its passwordFile at
the lab's password file, and the `qbt-vpn-watchdog` the module puts on PATH run
as rendered, against the lab.

Nothing of the store exists here: the script's interpreter, the package and the
generated config are each replaced by what stands for them (bash, this
checkout's command, the evaluated settings written as TOML, as formats.toml
writes them); the script's own lines are run unchanged.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from qbt_vpn_watchdog.checks import load_all
from qbt_vpn_watchdog.cli import CONFIG_ENV
from tests.support import nixos_eval
from tests.support.nixos_eval import EXAMPLE, to_toml

pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(nixos_eval.unavailable() is not None, reason=nixos_eval.unavailable() or ""),
]

STORE_BASH = re.compile(r"^#!/nix/store/[^\n]*/bin/bash$", re.M)


def _rendered_command(lab, tmp_path: Path) -> tuple[Path, Path]:
    """(the module's `qbt-vpn-watchdog` as it runs here, the config file it names)."""
    settings = tomllib.loads(Path(lab.config_path).read_text())
    password = settings["qbittorrent"].pop("password_file")
    (tmp_path / "lab-settings.json").write_text(json.dumps(settings))
    host = EXAMPLE.with_module(
        "{ lib, ... }: { services.qbt-vpn-watchdog = {"
        f' passwordFile = lib.mkForce "{password}";'
        " settings = lib.mapAttrsRecursive (_: lib.mkOverride 50)"
        f" (builtins.fromJSON (builtins.readFile {tmp_path / 'lab-settings.json'})); }}; }}",
        "example host, settings of the lab",
    )
    w = nixos_eval.evaluate(host, toplevel=False).probe["Watchdog"]
    # The module, not this test, put the password file in the config.
    assert w["settings"]["qbittorrent"]["password_file"] == password
    config = tmp_path / "qbt-vpn-watchdog.toml"
    config.write_text(to_toml(w["settings"]))
    (command,) = w["commands"]
    text = STORE_BASH.sub("#!/bin/bash", command["text"])
    text = text.replace(w["configFile"], str(config))
    text = text.replace(
        f"{w['package']}/bin/qbt-vpn-watchdog",
        str(Path(sys.executable).parent / "qbt-vpn-watchdog"),
    )
    assert "/nix/store" not in text, text
    script = tmp_path / "bin" / "qbt-vpn-watchdog"
    script.parent.mkdir()
    script.write_text(text)
    script.chmod(0o755)
    return script, config


def test_the_nixos_command_checks_the_lab_with_no_argument(lab, tmp_path):
    script, config = _rendered_command(lab, tmp_path)
    # A root shell: no systemd credential, no config named anywhere.
    env = {k: v for k, v in os.environ.items() if k not in ("CREDENTIALS_DIRECTORY", CONFIG_ENV)}
    env["PATH"] = f"{script.parent}:{env.get('PATH', '')}"
    p = subprocess.run(
        ["qbt-vpn-watchdog", "check", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = json.loads(p.stdout)
    assert out["config"] == str(config), out
    assert p.returncode == 0 and out["ok"] is True, p.stdout + p.stderr
    assert [c["check"] for c in out["checks"]] == list(load_all())
    table = subprocess.run(
        ["qbt-vpn-watchdog", "check", "--only", "bind"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0, table.stdout + table.stderr
    assert table.stdout.strip().splitlines()[-1] == "all 1 checks passed"
