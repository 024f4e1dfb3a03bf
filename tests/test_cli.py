import subprocess
import sys

from watchdog.cli import render_table
from watchdog.results import CheckResult

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
        [sys.executable, "-m", "watchdog", *args], capture_output=True, text=True, timeout=60, **kw
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
    assert p.returncode == 0 and "[checks.return_path]" in p.stdout
    f = tmp_path / "ex.toml"
    f.write_text(p.stdout)
    from watchdog.config import load

    load(f)


def test_unknown_only_check_is_a_usage_error(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[namespace]\nname = ""\n')
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
