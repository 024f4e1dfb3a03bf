import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from qbt_vpn_watchdog import privileges
from qbt_vpn_watchdog.cli import render_table
from qbt_vpn_watchdog.config import example_path, load, render_example
from qbt_vpn_watchdog.results import CheckResult

ROOT = Path(__file__).resolve().parents[2]

BROKEN = """
[watchdog]
interval = "abc"
[checks.dns]
timeout = "abc"
[checks.exit_ip]
url = "nope"
"""


def cli(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "qbt_vpn_watchdog", *args], capture_output=True, text=True, timeout=60, **kw
    )


def test_broken_config_prints_every_error_at_once_and_exits_2(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(BROKEN)
    p = cli("check", "--config", str(f))
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert 'watchdog.interval: expected a number, got "abc"' in p.stderr
    assert 'checks.dns.timeout: expected a number, got "abc"' in p.stderr
    assert 'checks.exit_ip.url: expected an http:// or https:// URL, got "nope"' in p.stderr
    assert "3 error(s)" in p.stderr


def test_missing_config_exits_2(tmp_path):
    p = cli("check", "--config", str(tmp_path / "none.toml"))
    assert p.returncode == 2 and "file not found" in p.stderr


def test_example_config_is_printed_and_valid(tmp_path):
    p = cli("example-config")
    assert p.returncode == 0 and p.stdout == render_example()
    f = tmp_path / "ex.toml"
    f.write_text(p.stdout)
    assert load(f) == load(example_path())


def test_check_json_with_a_bad_config_prints_a_json_error(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(BROKEN)
    p = cli("check", "--json", "--config", str(f))
    assert p.returncode == 2
    out = json.loads(p.stdout)
    assert out["ok"] is False and out["error"] == "config" and out["config"] == str(f)
    assert len(out["errors"]) == 3
    assert 'watchdog.interval: expected a number, got "abc"' in out["errors"]


def test_a_missing_password_file_stops_check_and_run_with_exit_2(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text(f'[qbittorrent]\npassword_file = "{tmp_path / "pw"}"\n')
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    for command in ("check", "run"):
        p = cli(command, "--config", str(f), env=env)
        assert p.returncode == 2, (command, p.stderr)
        assert f"qbittorrent.password_file: no such file: {tmp_path / 'pw'}" in p.stderr


def _unprivileged(*args: str, workdir: Path) -> subprocess.CompletedProcess:
    """This CLI as uid/gid 65534 (nobody), which has no capabilities."""
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         sys.executable, "-m", "qbt_vpn_watchdog", *args],
        capture_output=True, text=True, timeout=60, cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root, setpriv")
@pytest.mark.parametrize("command", ["check", "run"])
def test_without_privileges_every_command_says_what_it_needs(tmp_path, command):
    workdir = Path(tempfile.mkdtemp(prefix="qbtvpn-unpriv-"))
    try:
        workdir.chmod(0o755)
        (workdir / "c.toml").write_text("")
        p = _unprivileged(command, "--config", str(workdir / "c.toml"), workdir=workdir)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "needs root, or CAP_SYS_ADMIN + CAP_NET_ADMIN" in p.stderr
        assert "lacks CAP_SYS_ADMIN and CAP_NET_ADMIN" in p.stderr
        assert "Traceback" not in p.stderr and "Operation not permitted" not in p.stderr
        if command == "check":
            j = _unprivileged(command, "--json", "--config", "c.toml", workdir=workdir)
            assert json.loads(j.stdout)["error"] == "privileges"
    finally:
        shutil.rmtree(workdir)


def test_privileges_are_read_from_the_effective_set():
    assert privileges.effective("Name:\tx\nCapEff:\t000001ffffffffff\n") == 0x1FFFFFFFFFF
    assert privileges.missing(1 << 21 | 1 << 12) == []
    assert privileges.missing(1 << 12) == ["CAP_SYS_ADMIN"]
    assert privileges.refusal("check", 1 << 21 | 1 << 12) is None


def test_unknown_only_check_is_a_usage_error(tmp_path):
    f = tmp_path / "c.toml"
    pw = tmp_path / "pw"
    pw.write_text("")
    f.write_text(f'[namespace]\nname = ""\n[qbittorrent]\npassword_file = "{pw}"\n')
    p = cli("check", "--config", str(f), "--only", "nosuch")
    assert p.returncode == 2 and "no such check" in p.stderr


def _r(name, ok, reason="ok", detail=""):
    return CheckResult(name, ok, reason, detail, {}, {}, 0.0, 0.012)


def test_table_lists_each_check_and_the_failures():
    out = render_table(
        [_r("handshake", True, detail="12 s ago"), _r("return_path", False, "handshake_only", "92")]
    )
    assert "handshake" in out and "FAILED" in out and "handshake_only" in out
    assert out.strip().splitlines()[-1] == "FAILED: return_path"
    assert "\033[" not in out
    assert "\033[" in render_table([_r("a", True)], colour=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="run checks privileges before the config")
def test_run_with_an_unusable_web_config_file_exits_2_naming_it(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("x")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[qbittorrent]\npassword_file = "{pw}"\n')
    r = cli("run", "--config", str(cfg), "--web.config.file", str(tmp_path / "none.yml"))
    assert r.returncode == 2
    assert f"web.config_file: no such file: {tmp_path / 'none.yml'}" in r.stderr
    cfg.write_text(cfg.read_text() + '[web]\nbasic_auth_username = "p"\n'
                   f'basic_auth_password_file = "{pw}"\n')  # fmt: skip
    r = cli("run", "--config", str(cfg), "--web.config.file", str(tmp_path / "none.yml"))
    assert r.returncode == 2 and "with --web.config.file, put TLS and users in that file" in r.stderr
