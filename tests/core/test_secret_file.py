"""The password file is read carefully: no symlink, a regular file, a size cap, a warning
when others can read it; its errors name the file and never the content."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from qbt_vpn_watchdog.config import ConfigError, QbittorrentSection, read_password
from qbt_vpn_watchdog.secret_file import MAX_SECRET_BYTES, SecretFileError, read_secret_file
from qbt_vpn_watchdog.sources import local_resource

SECRET = "hunter2-do-not-leak"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def secret(tmp_path) -> Path:
    p = tmp_path / "pw"
    p.write_text(SECRET + "\n")
    p.chmod(0o600)
    return p


def test_a_private_regular_file_is_read_quietly(secret, caplog):
    assert read_secret_file(secret) == SECRET
    assert caplog.records == []


def test_a_symlink_is_refused_even_to_a_good_file(secret, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(secret)
    with pytest.raises(SecretFileError) as e:
        read_secret_file(link)
    assert "symbolic link" in str(e.value) and "LoadCredential" in str(e.value)
    assert SECRET not in str(e.value)


def test_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[BaseException] = []
    t = threading.Thread(
        target=lambda: got.append(pytest.raises(SecretFileError, read_secret_file, fifo).value)
    )
    t.start()
    t.join(5)
    assert not t.is_alive(), "opening a FIFO hung"
    assert "not a regular file" in str(got[0])


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(SecretFileError, match="not a regular file"):
        read_secret_file(tmp_path)


def test_a_huge_file_is_refused_unread(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(SecretFileError, match=f"more than a password file's {MAX_SECRET_BYTES}"):
        read_secret_file(big)


def test_group_or_world_readable_is_warned_once(secret, caplog):
    caplog.set_level(logging.WARNING)
    secret.chmod(0o644)
    for _ in range(3):
        assert read_secret_file(secret) == SECRET
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "its group and every user (mode 0644)" in warnings[0]
    assert SECRET not in caplog.text


def test_read_password_names_the_file_and_what_is_wrong(secret, tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    link = tmp_path / "link"
    link.symlink_to(secret)
    with pytest.raises(ConfigError) as e:
        read_password(QbittorrentSection(password_file=str(link)))
    assert f"qbittorrent.password_file: {link} is a symbolic link" in str(e.value)
    assert read_password(QbittorrentSection(password_file=str(secret))) == SECRET


def test_out_of_file_descriptors_is_a_local_resource_error_not_a_bad_file(secret):
    script = textwrap.dedent(
        f"""
        import os, resource
        from qbt_vpn_watchdog.config import ConfigError, QbittorrentSection, read_password
        from qbt_vpn_watchdog.sources import local_resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        fds = []
        try:
            while True:
                fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        try:
            read_password(QbittorrentSection(password_file={str(secret)!r}))
        except ConfigError as e:
            print(local_resource(e))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CREDENTIALS_DIRECTORY", None)
    p = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert "too many open files" in p.stdout, p.stdout + p.stderr
    assert local_resource(ConfigError("x", ["y"])) is None
