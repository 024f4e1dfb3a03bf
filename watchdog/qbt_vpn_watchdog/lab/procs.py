"""Every process the lab starts is recorded by PID and stopped by that PID.

Never by name: a `pkill qbittorrent-nox` would also kill a user's real one.
A PID file holds one number; before signalling, /proc/PID/cmdline must still
name the program we started, so a recycled PID is never killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from qbt_vpn_watchdog.lab.state import LOG_DIR, PID_DIR

# What each recorded process runs, to recognise it in /proc before signalling.
PROGRAMS = ("wireguard-go", "dnsmasq", "qbittorrent-nox", "python")


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _zombie(pid: int) -> bool:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return "Z" in line.split()[1]
    except OSError:
        return True
    return False


def _reap(pid: int) -> None:
    # Our own children (started in this process) must be waited for, else they
    # linger as zombies that look alive in /proc.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def alive(pid: int, program: str | None = None) -> bool:
    _reap(pid)
    cmd = _cmdline(pid)
    if not cmd or _zombie(pid):
        return False
    wanted = (program,) if program else PROGRAMS
    return any(p in cmd for p in wanted)


def pid_file(name: str) -> Path:
    return PID_DIR / f"{name}.pid"


def read_pid(name: str) -> int | None:
    try:
        return int(pid_file(name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def running(name: str, program: str | None = None) -> int | None:
    pid = read_pid(name)
    return pid if pid is not None and alive(pid, program) else None


def start(name: str, argv: list[str], *, netns: str | None = None, env: dict | None = None) -> int:
    """Start ``argv`` (inside ``netns``) detached, log to LOG_DIR/name.log, record its PID."""
    PID_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    # `ip netns exec` execs the program, so the PID is the program's own.
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    with open(LOG_DIR / f"{name}.log", "ab") as log:
        p = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is the lab's to handle
            env={**os.environ, **(env or {})},
        )
    pid_file(name).write_text(f"{p.pid}\n")
    return p.pid


def stop(
    name: str, program: str | None = None, *, sig: int = signal.SIGTERM, timeout: float = 5.0
) -> bool:
    """Stop the recorded process; True if it was running. Removes the PID file."""
    pid = read_pid(name)
    was = False
    if pid is not None and alive(pid, program):
        was = True
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while alive(pid, program) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid, program):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 2
            while alive(pid, program) and time.monotonic() < deadline:
                time.sleep(0.05)
    pid_file(name).unlink(missing_ok=True)
    return was


def recorded() -> list[str]:
    return sorted(p.stem for p in PID_DIR.glob("*.pid")) if PID_DIR.is_dir() else []


def stop_all() -> list[str]:
    """Stop every recorded process (in reverse start order is not needed: all are leaves)."""
    return [name for name in recorded() if stop(name)]
