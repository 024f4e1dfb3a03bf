"""Log formats and levels: flags, environment, config (issue #23's --log.* flags)."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest

from qbt_vpn_watchdog import logs


@pytest.fixture
def fresh_root():
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        yield root
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def _emit(fmt, *, journal=False, monkeypatch=None, level="info"):
    stream = io.StringIO()
    if journal:
        # A real file as the "journal stream": $JOURNAL_STREAM names its dev:ino.
        import tempfile

        f = tempfile.TemporaryFile("w+")
        st = os.fstat(f.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        stream = f
    logging.getLogger().handlers.clear()  # pytest's own capture is put back afterwards
    logs.setup_logging(stream, level=level, fmt=fmt)
    log = logging.getLogger("qbt_vpn_watchdog.test")
    log.warning('would stop 3 torrents: return_path "no_return_traffic"')
    log.debug("hidden at info")
    stream.seek(0)
    return stream.read()


def test_logfmt_lines_quote_what_needs_it(fresh_root):
    line = _emit("logfmt").strip()
    assert line.startswith("ts=") and " level=warn logger=qbt_vpn_watchdog.test " in line
    assert line.endswith('msg="would stop 3 torrents: return_path \\"no_return_traffic\\""')
    assert "hidden" not in line


def test_json_lines_are_objects(fresh_root):
    obj = json.loads(_emit("json"))
    assert obj["level"] == "warn" and obj["logger"] == "qbt_vpn_watchdog.test"
    assert obj["msg"] == 'would stop 3 torrents: return_path "no_return_traffic"'
    assert obj["ts"].endswith("Z")


@pytest.mark.parametrize("fmt", ["text", "logfmt", "json"])
def test_under_journald_every_format_keeps_the_priority_prefix(fresh_root, monkeypatch, fmt):
    out = _emit(fmt, journal=True, monkeypatch=monkeypatch)
    assert out.startswith("<4>"), out
    if fmt == "json":
        assert json.loads(out[3:])["level"] == "warn"


def test_the_old_level_variable_still_works_with_a_warning(monkeypatch):
    monkeypatch.delenv(logs.LEVEL_ENV, raising=False)
    monkeypatch.setenv(logs.OLD_LEVEL_ENV, "debug")
    level, warning = logs.env_log_level()
    assert level == "debug" and logs.LEVEL_ENV in warning and "deprecated" in warning
    monkeypatch.setenv(logs.LEVEL_ENV, "error")
    assert logs.env_log_level() == ("error", None)


def test_debug_level_shows_debug(fresh_root):
    assert "hidden at info" in _emit("text", level="debug")
