"""Logging: text, logfmt or JSON lines; under journald each line keeps its syslog priority.

Level and format come from the flags ``--log.level``/``--log.format``, else
``$QBT_VPN_WATCHDOG_LOG_LEVEL``/``$QBT_VPN_WATCHDOG_LOG_FORMAT``, else the
config's ``watchdog.log_level``/``log_format`` (the CLI decides; see cli.py).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

LEVEL_ENV = "QBT_VPN_WATCHDOG_LOG_LEVEL"
FORMAT_ENV = "QBT_VPN_WATCHDOG_LOG_FORMAT"
# The name before one prefix for every variable; still read, with a warning.
OLD_LEVEL_ENV = "QBTVPN_LOG_LEVEL"

# sd-daemon(3) priority prefixes: journald reads "<N>" at the start of a line on
# a service's stdout/stderr as the syslog priority (SyslogLevelPrefix=yes).
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}


def _level_word(record: logging.LogRecord) -> str:
    return {"WARNING": "warn", "CRITICAL": "error"}.get(record.levelname, record.levelname.lower())


def _timestamp(record: logging.LogRecord) -> str:
    ms = int(record.msecs)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{ms:03d}Z"


def _fields(formatter: logging.Formatter, record: logging.LogRecord) -> dict[str, str]:
    """What a logfmt or JSON line carries: ts, level, logger, msg (and err with a traceback)."""
    fields = {
        "ts": _timestamp(record),
        "level": _level_word(record),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    if record.exc_info:
        fields["err"] = formatter.formatException(record.exc_info)
    return fields


class _LogfmtFormatter(logging.Formatter):
    """``ts=... level=info logger=... msg="..."``, as Prometheus's exporters log (go-kit logfmt)."""

    @staticmethod
    def _value(v: str) -> str:
        if v and not any(c in v for c in ' ="\\\n') and v.isprintable():
            return v
        return json.dumps(v, ensure_ascii=False)

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(self, record)
        return " ".join(f"{k}={self._value(str(v))}" for k, v in fields.items())


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (and err with a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(self, record), ensure_ascii=False)


class _JournalFormatter(logging.Formatter):
    """Prefixes each line of another formatter's output with its syslog priority."""

    def __init__(self, fmt: str | None = None, inner: logging.Formatter | None = None) -> None:
        super().__init__(fmt)
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 2 if record.levelno > logging.ERROR else 6)
        text = self._inner.format(record) if self._inner else super().format(record)
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


def env_log_level() -> tuple[str | None, str | None]:
    """(level from the environment or None, a deprecation warning or None)."""
    value = os.environ.get(LEVEL_ENV)
    if value:
        return value, None
    old = os.environ.get(OLD_LEVEL_ENV)
    if old:
        return old, f"${OLD_LEVEL_ENV} is deprecated: set ${LEVEL_ENV} (or --log.level) instead"
    return None, None


def _formatter(fmt: str, stream: Any) -> logging.Formatter:
    if fmt == "logfmt":
        inner: logging.Formatter = _LogfmtFormatter()
    elif fmt == "json":
        inner = _JsonFormatter()
    elif getattr(stream, "isatty", lambda: False)() and not _stderr_is_journal(stream):
        inner = logging.Formatter("%(asctime)s %(levelname)-7s %(message)s")
    else:
        # journald (or whatever collects the output) adds its own timestamps.
        inner = logging.Formatter(
            "%(message)s" if _stderr_is_journal(stream) else "%(levelname)s %(message)s"
        )
    return _JournalFormatter(inner=inner) if _stderr_is_journal(stream) else inner


def setup_logging(
    stream: Any = None,
    level: int | str | None = None,
    fmt: str | None = None,
    replace: bool = False,
) -> None:
    """Journald-friendly logging: no timestamps in text unless on a TTY (journald adds its own).

    ``level`` (e.g. "debug") defaults to the environment's, else INFO; ``fmt``
    is "text", "logfmt" or "json" (default text, or the environment's).
    Does nothing when the root logger already has handlers (tests, embedding),
    except that ``replace`` swaps the one it installed itself: a provisional
    set-up from the flags and the environment (before the config is read, whose
    loading may already warn) gives way to the config's level and format.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "qbtvpn_handler", False)]
    if root.handlers and not (replace and len(ours) == len(root.handlers)):
        return
    for h in ours:
        root.removeHandler(h)
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.qbtvpn_handler = True  # type: ignore[attr-defined]
    handler.setFormatter(_formatter(fmt or os.environ.get(FORMAT_ENV) or "text", stream))
    root.addHandler(handler)
    level = level or env_log_level()[0] or "INFO"
    try:
        root.setLevel(level.upper() if isinstance(level, str) else level)
    except ValueError:
        root.setLevel(logging.INFO)
