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
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.wg_pair import WgPair
from tests.vm.guest.helpers import vpn_pair, watchdog_config

pytestmark = pytest.mark.kernel_vm

CYCLES = 30
JOB = Path("/run/qvw-job")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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


class Daemon:
    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)
        with open(log, "wb") as f:
            self.p = subprocess.Popen(
                [sys.executable, "-m", "qbt_vpn_watchdog", "run", "--config", str(config)],
                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def metrics(self) -> dict[str, float]:
        try:
            with _OPENER.open(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)


def test_daemon_on_the_kernel_path_and_its_memory(tmp_path):
    password = tmp_path / "password"
    password.write_text("not-used\n")
    daemons = {}
    with contextlib.ExitStack() as stack:
        for n, (reader, prefix) in enumerate((("kernel", "qvr"), ("uapi", "qvu"))):
            pair = stack.enter_context(vpn_pair(prefix, kernel=reader == "kernel"))
            cfg = tmp_path / f"{reader}.toml"
            cfg.write_text(config_text(pair, reader, 9870 + n, password))
            daemons[reader] = Daemon(cfg, 9870 + n, tmp_path / f"{reader}.log")
            stack.callback(daemons[reader].stop)  # before its pair goes down
        cycles = "qbtvpn_cycles_total"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            seen = {r: d.metrics().get(cycles, 0) for r, d in daemons.items()}
            if all(c >= CYCLES for c in seen.values()):
                break
            assert all(d.p.poll() is None for d in daemons.values()), "a daemon exited"
            time.sleep(1)
        results = {}
        for reader, d in daemons.items():
            m = d.metrics()
            results[reader] = {"rss_mib": round(d.rss_mib(), 1), "cycles": m.get(cycles, 0)}
            assert m.get(cycles, 0) >= CYCLES, (reader, d.log.read_text()[-3000:])
            for check in ("handshake", "return_path", "dns"):
                assert m.get(f'qbtvpn_check_success{{check="{check}"}}') == 1.0, (reader, check)
    (JOB / "rss.json").write_text(json.dumps(results))
    print(f"daemon RSS after {CYCLES}+ cycles: {results}")
