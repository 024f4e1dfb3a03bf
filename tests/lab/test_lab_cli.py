"""`qbt-vpn-watchdog lab ...`: root only, clear errors, and no tearing down a lab in use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qbt_vpn_watchdog.lab import cli, control


def test_needs_root(monkeypatch, capsys):
    monkeypatch.setattr(cli.os, "geteuid", lambda: 1000)
    assert cli.main(["up"]) == 2
    assert "needs root" in capsys.readouterr().err


def test_usage_lists_the_faults(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert "return-path" in out and "webui-exposed" in out


@pytest.mark.root
def test_unknown_fault_lists_the_known_ones(capsys):
    assert cli.main(["break", "no-such-fault"]) == 2
    err = capsys.readouterr().err
    assert "unknown fault 'no-such-fault'" in err and "return-path" in err


@pytest.mark.root
def test_unknown_command_is_a_usage_error(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.lab
@pytest.mark.root
def test_lab_in_use_is_not_torn_down_by_another_process(lab):
    p = subprocess.run(
        [sys.executable, "-m", "qbt_vpn_watchdog.lab", "down"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 1
    assert "in use by process" in p.stderr
    assert control.is_up()
