"""The lab lock (watchdog/qbt_vpn_watchdog/lab/control.py): one holder per machine, re-entrant for that holder.

Each test points the lock at its own file, so it never waits for (or blocks)
a lab another session holds.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qbt_vpn_watchdog.lab import control

HANG = 10.0  # seconds: a nested hold that waits this long would have waited forever


@pytest.fixture(autouse=True)
def own_lock(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "lab.lock"
    monkeypatch.setattr(control, "LOCK_PATH", path)
    # In the whole suite this thread may already hold the real lab (the session's lab
    # fixture): without this, every hold here would be a nested one of that hold.
    monkeypatch.setattr(control, "_holder", None)
    return path


@contextlib.contextmanager
def fails_instead_of_hanging(seconds: float = HANG):
    """Raise TimeoutError in this (the main) thread if the block takes longer than ``seconds``."""

    def alarm(signum, frame):
        raise TimeoutError(f"still waiting after {seconds:g} s: it would have hung")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def another_process_gets(path: Path) -> bool:
    """Whether another process could take the lock now (it does not wait)."""
    code = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n    print('busy')\nelse:\n    print('got')\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip() == "got"


def test_the_holder_takes_it_again_and_only_the_outermost_hold_releases_it(own_lock):
    with fails_instead_of_hanging(), control.exclusive(wait=HANG):
        with control.exclusive(wait=HANG):
            assert not another_process_gets(own_lock)
        assert not another_process_gets(own_lock), "the nested hold released the lock"
    assert another_process_gets(own_lock)


def test_another_thread_of_the_holder_still_waits():
    errors: list[BaseException] = []

    def other() -> None:
        try:
            with control.exclusive(wait=0.0):
                pass
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            errors.append(e)

    with control.exclusive():
        th = threading.Thread(target=other)
        th.start()
        th.join(HANG)
    assert not th.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], control.LabBusy), errors


def test_lab_up_inside_the_held_lock_does_not_deadlock(monkeypatch):
    # A bench run inside a session that holds the lab (the lab fixture, the demo):
    # lab_up() takes the lock again. Before the lock was re-entrant this waited
    # for itself for 900 s, then failed with LabBusy.
    from qbt_vpn_watchdog.lab.state import CONFIG_PATH
    from tests.bench.common import lab_up

    monkeypatch.setattr(control, "is_up", lambda: True)  # the holder's lab: up, left alone
    with fails_instead_of_hanging(), control.exclusive(), lab_up() as path:
        assert path == CONFIG_PATH
