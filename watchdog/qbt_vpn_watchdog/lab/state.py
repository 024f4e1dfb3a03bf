"""Where the lab keeps its state: PIDs, logs, keys, profiles, applied faults."""

from __future__ import annotations

from pathlib import Path

STATE_DIR = Path("/run/qvl-lab")
PID_DIR = STATE_DIR / "pids"
LOG_DIR = STATE_DIR / "logs"
FAULT_DIR = STATE_DIR / "faults"
WG_DIR = STATE_DIR / "wg"
CONFIG_PATH = STATE_DIR / "watchdog.toml"
PASSWORD_FILE = STATE_DIR / "qbt-password"
UP_MARKER = STATE_DIR / "up"
# The QBT_VERSION the lab was brought up with: a heal or a restart later starts
# the same qBittorrent, whatever the environment of whoever runs it.
QBT_VERSION_FILE = STATE_DIR / "qbt-version"


def applied_faults() -> list[str]:
    return sorted(p.name for p in FAULT_DIR.iterdir()) if FAULT_DIR.is_dir() else []


def mark_fault(name: str, note: str = "") -> None:
    FAULT_DIR.mkdir(parents=True, exist_ok=True)
    (FAULT_DIR / name).write_text(note)


def fault_note(name: str) -> str:
    try:
        return (FAULT_DIR / name).read_text()
    except OSError:
        return ""


def clear_fault(name: str) -> None:
    (FAULT_DIR / name).unlink(missing_ok=True)
