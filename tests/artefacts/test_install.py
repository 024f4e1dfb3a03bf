"""The documented install on a host without NixOS (issue #22): what README "Install" and
docs/systemd.md say, performed from a freshly built wheel into a fresh virtualenv
(tests/support/installed.py; a temporary folder stands in for /opt)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from qbt_vpn_watchdog.checks import load_all
from qbt_vpn_watchdog.cli import DEFAULT_CONFIG
from qbt_vpn_watchdog.config import render_example
from tests.support.installed import PREFIX, ROOT, STEPS, exec_start


def _commands(doc: Path) -> list[str]:
    """The shell commands of a document's ```sh blocks, without `sudo` and comments."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", doc.read_text(), re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].split(" # ")[0].strip()
            if line and not line.startswith("#"):
                out.append(line.removeprefix("sudo "))
    return out


def test_the_docs_give_the_install_the_tests_perform():
    for doc in (ROOT / "README.md", ROOT / "docs" / "systemd.md"):
        commands = _commands(doc)
        for step in STEPS:
            assert step in commands, f"{doc.name}: no `{step}`"
        assert "pip install ." not in commands, f"{doc.name}: Debian refuses it (PEP 668)"


def test_the_unit_runs_the_installed_command():
    argv = exec_start()
    assert argv[0] == f"{PREFIX}/bin/qbt-vpn-watchdog"
    assert argv[1:] == ["run", "--config", DEFAULT_CONFIG]


def _run(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60)


def test_the_installed_wheel_runs_check_help_and_the_units_exec_start(installed):
    assert installed.wheel.name.endswith("-py3-none-any.whl")
    # Not the checkout's package: the virtualenv's own copy.
    where = _run(
        installed.python, "-c", "import qbt_vpn_watchdog; print(qbt_vpn_watchdog.__file__)"
    )
    assert Path(where.stdout.strip()).is_relative_to(installed.prefix), where.stdout + where.stderr
    # `qbt-vpn-watchdog check --help` as README gives it: through the link on PATH.
    assert installed.on_path.resolve() == installed.command.resolve()
    help_ = _run(installed.on_path, "check", "--help")
    assert help_.returncode == 0, help_.stderr
    for name in load_all():
        assert name in help_.stdout, f"check --help does not list {name}"
    # The unit's ExecStart=, at its place under the stand-in for /opt.
    argv = exec_start()
    unit_command = installed.path(argv[0])
    assert unit_command == installed.command
    p = _run(unit_command, argv[1], "--help")
    assert p.returncode == 0 and "--config" in p.stdout, p.stderr
    # The data files travel in the wheel.
    example = _run(unit_command, "example-config")
    assert example.returncode == 0 and example.stdout == render_example()
    scripts = list(
        installed.prefix.glob("lib/python3*/site-packages/qbt_vpn_watchdog/vpn-netns.sh")
    )
    assert len(scripts) == 1, scripts
