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
        [sys.executable, "-m", "qbt_vpn_watchdog", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
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


def _unprivileged(installed, *args: str, workdir: Path) -> subprocess.CompletedProcess:
    """This CLI as uid/gid 65534 (nobody), which has no capabilities.

    From the documented install (tests/support/installed.py), never from the
    checkout: nobody may not be able to read a checkout under /root (0700) or
    in a ``mktemp -d`` folder.
    """
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         str(installed.python), "-m", "qbt_vpn_watchdog", *args],
        capture_output=True, text=True, timeout=60, cwd=workdir,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )  # fmt: skip


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root, setpriv")
@pytest.mark.parametrize("command", ["check", "run"])
def test_without_privileges_every_command_says_what_it_needs(installed, command):
    workdir = Path(tempfile.mkdtemp(prefix="qbtvpn-unpriv-"))
    try:
        workdir.chmod(0o755)
        (workdir / "c.toml").write_text("")
        p = _unprivileged(installed, command, "--config", str(workdir / "c.toml"), workdir=workdir)
        assert p.returncode == 2, p.stdout + p.stderr
        assert "needs root, or CAP_SYS_ADMIN + CAP_NET_ADMIN" in p.stderr
        assert "lacks CAP_SYS_ADMIN and CAP_NET_ADMIN" in p.stderr
        assert "Traceback" not in p.stderr and "Operation not permitted" not in p.stderr
        if command == "check":
            j = _unprivileged(installed, command, "--json", "--config", "c.toml", workdir=workdir)
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


def test_only_a_disabled_check_is_a_usage_error(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("")
    f = tmp_path / "c.toml"
    f.write_text(f'[qbittorrent]\npassword_file = "{pw}"\n[checks.path_mtu]\nenabled = false\n')
    p = cli("check", "--config", str(f), "--only", "path_mtu")
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"--only path_mtu: disabled in {f} (checks.path_mtu.enabled = false)" in p.stderr
    assert "checks passed" not in p.stdout


def test_check_help_lists_every_check_with_what_it_checks():
    from qbt_vpn_watchdog.checks import load_all

    p = cli("check", "--help")
    assert p.returncode == 0
    listed = p.stdout.split("checks (in this order", 1)[1].splitlines()[1:]
    assert [line.split()[0] for line in listed if line.strip()] == list(load_all())
    for name, spec in load_all().items():
        assert f"{name}" in p.stdout and spec.summary in p.stdout


@pytest.mark.parametrize(
    "flag, expected",
    [
        ("127.0.0.1:9879", {"listen_address": "127.0.0.1", "listen_port": 9879}),
        ("[::]:9100", {"listen_address": "::", "listen_port": 9100}),
        (":9879", {"listen_address": "0.0.0.0", "listen_port": 9879}),
    ],
)
def test_web_listen_address_flag_is_the_two_config_keys(flag, expected):
    from qbt_vpn_watchdog.config import listen_flag, parse, set_flags

    assert listen_flag(flag) == expected
    try:
        set_flags({"watchdog": listen_flag(flag)})
        # Laid over the file at every load (and reload): the flag wins.
        cfg = parse('[watchdog]\nlisten_address = "10.0.0.1"\nlisten_port = 1234\n')
        assert (cfg.watchdog.listen_address, cfg.watchdog.listen_port) == tuple(expected.values())
    finally:
        set_flags({})


@pytest.mark.parametrize("flag", ["9879", "localhost:9879", "127.0.0.1:0", "127.0.0.1:http"])
def test_a_bad_web_listen_address_is_a_usage_error(tmp_path, flag):
    p = cli("run", "--config", str(tmp_path / "none.toml"), "--web.listen-address", flag)
    assert p.returncode == 2
    assert p.stderr.startswith("qbt-vpn-watchdog: --web.listen-address: expected ")
    assert "Traceback" not in p.stderr
