import os

import pytest

from watchdog import config
from watchdog.config import ConfigError


def test_example_config_loads_and_matches_defaults():
    cfg = config.load(config.example_path())
    assert cfg.netns == "vpn"
    assert cfg.checks.handshake.max_age == 180
    assert cfg.checks.exit_ip.interval >= 60  # AirVPN's rate limit
    # Every default in the dataclasses is what the example documents (bar the namespace).
    defaults = config.Config()
    assert cfg.checks == defaults.checks and cfg.watchdog == defaults.watchdog


BROKEN = """
[watchdog]
interval = "abc"
listen_port = 70000
typo = 1
[checks.dns]
timeout = -1
names = []
[checks.exit_ip]
url = "ftp://example.org"
allowed_ips = ["not-an-ip"]
[wireguard]
reader = "magic"
interface = "a-very-long-interface-name"
[checks.nosuch]
"""


def test_every_error_is_reported_at_once_with_its_key_path():
    with pytest.raises(ConfigError) as e:
        config.parse(BROKEN, "broken.toml")
    errs = "\n".join(e.value.errors)
    for needle in [
        'watchdog.interval: expected a number, got "abc"',
        "watchdog.listen_port: expected a port number 1-65535, got 70000",
        "watchdog.typo: unknown key",
        "checks.dns.timeout: expected a positive number of seconds, got -1",
        "checks.dns.names: expected a non-empty list of DNS names",
        'checks.exit_ip.url: expected an http:// or https:// URL, got "ftp://example.org"',
        "checks.exit_ip.allowed_ips: expected a list of IP addresses",
        'wireguard.reader: expected one of "auto", "kernel", "uapi", got "magic"',
        "wireguard.interface: expected an interface name",
        "checks.nosuch: unknown key",
    ]:
        assert needle in errs
    assert len(e.value.errors) == 10


def test_not_toml_and_missing_file():
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.parse("[watchdog\n")
    with pytest.raises(ConfigError, match="file not found"):
        config.load("/nonexistent/qbt.toml")


def test_table_where_value_expected_and_vice_versa():
    with pytest.raises(ConfigError) as e:
        config.parse("watchdog = 3\n[namespace.name]\n")
    assert any("watchdog: expected a table" in x for x in e.value.errors)
    assert any("namespace.name: expected a string, got a table" in x for x in e.value.errors)


def test_password_prefers_systemd_credential_and_never_leaks(tmp_path, monkeypatch):
    pw = tmp_path / "pw"
    pw.write_text("s3cret-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "qbittorrent-password").write_text("s3cret-cred\n")
    q = config.parse(f'[qbittorrent]\npassword_file = "{pw}"\n').qbittorrent
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert config.read_password(q) == "s3cret-file"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert config.read_password(q) == "s3cret-cred"
    os.unlink(creds / "qbittorrent-password")
    os.unlink(pw)
    with pytest.raises(ConfigError) as e:
        config.read_password(q)
    assert "s3cret" not in str(e.value) and str(pw) in str(e.value)
