"""qbtvpn_build_info{revision}: recorded at build time, read from git in a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from qbt_vpn_watchdog.build import revision

ROOT = Path(__file__).resolve().parents[2]


def test_the_build_records_the_revision_it_is_given(tmp_path):
    env = dict(os.environ, QBTVPN_REVISION="0123456789abcdef0123456789abcdef01234567")
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    recorded = (tmp_path / "qbt_vpn_watchdog" / "REVISION").read_text().strip()
    assert recorded == env["QBTVPN_REVISION"]
    assert (tmp_path / "qbt_vpn_watchdog" / "http_server.py").exists()


def test_a_checkout_reports_its_head():
    head = subprocess.run(["git", "-c", "safe.directory=*", "rev-parse", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    assert revision() == (head or "unknown")
