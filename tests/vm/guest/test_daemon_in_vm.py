"""The daemon itself on the kernel's WireGuard, beside the same daemon on wireguard-go.

Two pairs in the VM (tests/support/wg_pair.py): one with the kernel's WireGuard, one
with wireguard-go. A daemon (``python -m qbt_vpn_watchdog run``) watches each, the
same config but ``wireguard.reader``. Both must report the tunnel healthy
through /metrics; their RSS after the same number of cycles is written to
the job directory (rss.json) for the host to print: the memory of the kernel
path, measured, not estimated. No qBittorrent here: its checks fail the same
way in both (connection refused), so the difference is the WireGuard path.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest

from tests.support.daemon_proc import WatchdogProc
from tests.support.wg_pair import WgPair
from tests.vm.guest.helpers import vpn_pair, watchdog_config

pytestmark = pytest.mark.kernel_vm

CYCLES = 30
JOB = Path("/run/qvw-job")


def config_text(pair: WgPair, reader: str, port: int, password: Path) -> str:
    before = f"""
[watchdog]
interval = 1.0
mode = "observe"
listen_port = {port}
[qbittorrent]
url = "http://127.0.0.1:9"
password_file = "{password}"
"""
    after = f"""[checks.exit_ip]
url = "http://{pair.tun_b}:9/"
"""
    return watchdog_config(pair, reader, before, after)


def test_daemon_on_the_kernel_path_and_its_memory(tmp_path):
    password = tmp_path / "password"
    password.write_text("not-used\n")
    daemons = {}
    with contextlib.ExitStack() as stack:
        for n, (reader, prefix) in enumerate((("kernel", "qvr"), ("uapi", "qvu"))):
            pair = stack.enter_context(vpn_pair(prefix, kernel=reader == "kernel"))
            cfg = tmp_path / f"{reader}.toml"
            cfg.write_text(config_text(pair, reader, 9870 + n, password))
            daemons[reader] = WatchdogProc(cfg, 9870 + n, tmp_path / f"{reader}.log")
            stack.callback(daemons[reader].stop)  # before its pair goes down
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if all(d.cycles() >= CYCLES for d in daemons.values()):
                break
            assert all(d.alive() for d in daemons.values()), "a daemon exited"
            time.sleep(1)
        results = {}
        for reader, d in daemons.items():
            m = d.metrics()
            n = m.get("qbtvpn_cycles_total", {}).get("", 0)
            results[reader] = {"rss_mib": round(d.rss_mib(), 1), "cycles": n}
            assert n >= CYCLES, (reader, d.tail())
            for check in ("handshake", "return_path", "dns"):
                ok = m.get("qbtvpn_check_success", {}).get(f'check="{check}"')
                assert ok == 1.0, (reader, check)
    (JOB / "rss.json").write_text(json.dumps(results))
    print(f"daemon RSS after {CYCLES}+ cycles: {results}")
