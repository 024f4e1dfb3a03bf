"""The session-wide lab fixture (owned by the lab: see watchdog/qbt_vpn_watchdog/lab/).

``lab`` brings the lab up once per test session (tearing down a stale one
first) and down at the end, even when tests fail. ``healed_lab`` is the same
lab for a fault test: every fault is healed after the test, pass or fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class LabHandle:
    config_path: Path
    up_seconds: float

    # Addresses and names, for tests that probe the topology directly.
    @property
    def t(self):
        from qbt_vpn_watchdog.lab import topology

        return topology

    def break_(self, fault: str) -> None:
        from qbt_vpn_watchdog.lab import faults

        faults.break_fault(fault)

    def heal(self, fault: str | None = None) -> list[str]:
        from qbt_vpn_watchdog.lab import faults

        return faults.heal_fault(fault)

    def applied(self) -> list[str]:
        from qbt_vpn_watchdog.lab import state

        return state.applied_faults()

    def qbt(self):
        from qbt_vpn_watchdog.lab import services

        return services.qbt_client()

    def exec_in(
        self, netns: str, argv: list[str], timeout: float = 30
    ) -> subprocess.CompletedProcess:
        """Run a command inside a lab namespace (never the root namespace)."""
        assert netns.startswith("qvl-")
        return subprocess.run(
            ["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=timeout
        )

    def tcp_connect(self, netns: str, host: str, port: int, timeout: float = 2.0) -> str:
        """A TCP connect made inside netns: "connected", "refused", "timeout" or "error: ..."."""
        code = (
            "import socket,sys\n"
            "s=socket.socket(); s.settimeout(float(sys.argv[3]))\n"
            "try:\n s.connect((sys.argv[1], int(sys.argv[2]))); print('connected')\n"
            "except ConnectionRefusedError: print('refused')\n"
            "except TimeoutError: print('timeout')\n"
            "except OSError as e: print('error:', e)\n"
        )
        argv = [sys.executable, "-c", code, host, str(port), str(timeout)]
        return self.exec_in(netns, argv, timeout=timeout + 10).stdout.strip()

    def http_get(self, netns: str, url: str, timeout: float = 3.0) -> tuple[int, str]:
        """(curl exit status, body) for a GET made inside netns."""
        p = self.exec_in(
            netns, ["curl", "-s", "--noproxy", "*", "-m", str(timeout), url], timeout + 10
        )
        return p.returncode, p.stdout

    def dns_query(self, name: str, server: str, timeout: float = 2.0) -> str:
        """A records of name from server, asked inside the confined namespace (or "timeout")."""
        code = (
            "import sys, dns.message, dns.query, dns.exception\n"
            "q = dns.message.make_query(sys.argv[1], 'A')\n"
            "try:\n"
            " r = dns.query.udp(q, sys.argv[2], timeout=float(sys.argv[3]))\n"
            " print(' '.join(sorted(rr.address for a in r.answer for rr in a)))\n"
            "except dns.exception.Timeout: print('timeout')\n"
            "except OSError as e: print('error:', e)\n"
        )
        argv = [sys.executable, "-c", code, name, server, str(timeout)]
        return self.exec_in(self.t.NS_VPN, argv, timeout=timeout + 10).stdout.strip()

    def peer(self) -> dict | None:
        """The client's WireGuard peer counters from `wg show dump`, or None without a tunnel."""
        p = subprocess.run(["wg", "show", self.t.WG_CLIENT, "dump"], capture_output=True, text=True)
        lines = p.stdout.splitlines()
        if p.returncode != 0 or len(lines) < 2:
            return None
        f = lines[1].split("\t")
        return {"handshake": int(f[4]), "rx": int(f[5]), "tx": int(f[6])}

    def run_checks(self, only: list[str] | None = None) -> dict:
        """Every enabled check once against the lab config (the CLI's one-shot path):
        {name: CheckResult}."""
        from qbt_vpn_watchdog.cli import run_once
        from qbt_vpn_watchdog.config import load

        return {r.check: r for r in run_once(load(self.config_path), only)}


LOCK_WAIT = 900.0  # seconds: another session's lab tests take a few minutes


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    from qbt_vpn_watchdog.lab import control

    # One lab per machine: a concurrent test session waits for this one.
    with control.exclusive(wait=LOCK_WAIT):
        if control.stale():
            control.down()
        t0 = time.monotonic()
        try:
            path = control.up()
            yield LabHandle(path, time.monotonic() - t0)
        finally:
            control.down()


@pytest.fixture
def healed_lab(lab):
    """The lab for one fault test: every fault healed afterwards, pass or fail."""
    try:
        yield lab
    finally:
        lab.heal()
