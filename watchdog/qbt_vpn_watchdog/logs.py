"""Logging for journald: syslog priority prefixes, no timestamps unless on a TTY."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

# sd-daemon(3) priority prefixes: journald reads "<N>" at the start of a line on
# a service's stdout/stderr as the syslog priority (SyslogLevelPrefix=yes).
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 2 if record.levelno > logging.ERROR else 6)
        text = super().format(record)
        # A traceback spans lines: prefix each so journald keeps the priority.
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def _stderr_is_journal(stream: Any) -> bool:
    """True when ``stream`` is the journal stream systemd gave us ($JOURNAL_STREAM=dev:ino)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(stream: Any = None, level: int | str | None = None) -> None:
    """Journald-friendly logging: no timestamps unless on a TTY (journald adds its own).

    The level comes from ``$QBTVPN_LOG_LEVEL`` (e.g. DEBUG) when not given.
    Does nothing when the root logger already has handlers (tests, embedding).
    """
    root = logging.getLogger()
    if root.handlers:
        return
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if _stderr_is_journal(stream):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    elif getattr(stream, "isatty", lambda: False)():
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(handler)
    level = level or os.environ.get("QBTVPN_LOG_LEVEL", "INFO")
    try:
        root.setLevel(level.upper() if isinstance(level, str) else level)
    except ValueError:
        root.setLevel(logging.INFO)
