"""`run --web.listen-address ... --web.disable-exporter-metrics --log.format=json`: the
daemon listens where the flag says and serves no process_* series, also after a reload
that names another port (and leaves process_metrics at its default, true), and every log
line is a JSON object.

A real daemon, as root, in the root namespace with every check that would send a
packet off this machine turned off (exit_ip, dns, webui, path_mtu, return_path):
only netlink reads and a refused connection to a closed loopback port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.support.monitoring import free_port

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="run needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN)"),
]


def _config(port: int, pw) -> str:
    off = "".join(
        f"[checks.{c}]\nenabled = false\n"
        for c in ("exit_ip", "dns", "webui", "path_mtu", "return_path")
    )
    return (
        f'[watchdog]\ninterval = 1.0\nmode = "observe"\nlisten_port = {port}\n'
        f'[wireguard]\ninterface = "qvn-nowg0"\n'
        f'[qbittorrent]\nurl = "http://127.0.0.1:{free_port()}"\npassword_file = "{pw}"\n{off}'
    )


def _healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        return r.read().decode()


def _wait(cond, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.3)
    return False


def test_listen_address_flag_wins_over_the_file_and_its_reload_and_logs_are_json(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("")
    file_port, flag_port, reload_port = free_port(), free_port(), free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(_config(file_port, pw))
    env = {
        k: v for k, v in os.environ.items() if k not in ("CREDENTIALS_DIRECTORY", "JOURNAL_STREAM")
    }
    log = (tmp_path / "stderr").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "qbt_vpn_watchdog", "run", "--config", str(cfg),
         "--web.listen-address", f"127.0.0.1:{flag_port}", "--log.format", "json",
         "--web.disable-exporter-metrics"],
        stdout=subprocess.DEVNULL, stderr=log, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        assert _wait(lambda: _healthz(flag_port) is not None), open(log.name).read()
        assert _healthz(file_port) is None
        served = _metrics(flag_port)
        assert "qbtvpn_build_info" in served and "process_resident_memory_bytes" not in served
        cfg.write_text(_config(reload_port, pw))
        proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: "configuration reloaded" in open(log.name).read()), open(
            log.name
        ).read()
        assert _healthz(flag_port) is not None and _healthz(reload_port) is None
        assert "process_resident_memory_bytes" not in _metrics(flag_port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    lines = [line for line in open(log.name).read().splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]  # every line, not only most
    assert {r["level"] for r in records} <= {"debug", "info", "warn", "error"}
    assert any("configuration reloaded" in r["msg"] for r in records)
