"""Two boots of the systemd VM on one state disk: the stack comes back by itself.

``test_first_boot`` runs in the first boot, ``test_second_boot`` in the second
(tests/vm/test_systemd_vm.py picks one with -k). Between them the VM powered
off; the host's root is read-only to it, and what it wrote (the host's config,
the qBittorrent profile, the units' enablement) lives on the state disk.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.vm.systemd_guest.test_units import CONFIG, UNITS, show, state, wait_for

pytestmark = pytest.mark.systemd_vm

MARK = Path("/var/lib/qvw-first-boot")


def up_and_healthy() -> str:
    wait_for("the units active", lambda: all(state(u) == "active" for u in UNITS), 240, 1)
    wait_for(
        "an ok cycle",
        lambda: show("qbt-vpn-watchdog.service", "StatusText")["StatusText"].startswith("ok"),
        180,
        1,
    )
    p = subprocess.run(
        ["/usr/local/bin/qbt-vpn-watchdog", "check", "--config", CONFIG],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    return Path("/etc/qbt-vpn-watchdog/webui-password").read_text()


def test_first_boot():
    assert not MARK.exists()
    MARK.write_text(up_and_healthy())


def test_second_boot():
    # Same state (the first boot's config, not a new one), and up without a manual step.
    assert MARK.exists(), "the state disk did not keep the first boot's files"
    assert up_and_healthy() == MARK.read_text()
