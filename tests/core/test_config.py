import dataclasses
import json
import os
import tomllib
import typing
from pathlib import Path

import pytest

from qbt_vpn_watchdog import config
from qbt_vpn_watchdog.config import ConfigError


def _flat(table: dict, path: str = "") -> dict:
    out = {}
    for k, v in table.items():
        where = f"{path}.{k}" if path else k
        out.update(_flat(v, where) if isinstance(v, dict) else {where: v})
    return out


def test_the_shipped_example_is_generated_from_the_schema():
    # Regenerate with: python -c "from qbt_vpn_watchdog.config import *; example_path().write_text(render_example())"
    assert config.example_path().read_text() == config.render_example()


def test_the_example_has_every_key_with_its_true_default_and_loads():
    text = config.render_example()
    shown = _flat(tomllib.loads(text))
    assert list(shown) == config._key_paths()
    cfg = config.load(config.example_path())
    assert dataclasses.replace(cfg, source="<defaults>") == config.Config()
    # Each key has one line of meaning right above it.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith(("#", "[")):
            assert lines[i - 1].startswith("# ") and len(lines[i - 1]) > 10, line


def test_the_example_shows_the_observe_line_a_new_host_starts_with():
    # The first day (README): watch first. The example names the line to use and the
    # file still loads once the operator has done what it says.
    text = config.render_example()
    marker = "# On a new host, replace the line below with: "
    lines = text.splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith(marker)]
    assert len(at) == 1
    i = at[0]
    assert lines[i + 1] == 'mode = "enforce"'
    lines[i + 1] = lines[i].removeprefix(marker)
    cfg = config.parse("\n".join(lines))
    assert cfg.watchdog.mode == "observe"
    assert "observe" in lines[i - 1] and "switch to" in lines[i - 1]  # when to switch


def test_every_key_explains_itself():
    def walk(cls):
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            sub = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(sub):
                yield from walk(sub)
            else:
                yield cls.__name__, f

    for owner, f in walk(config.Config):
        assert f.metadata.get("help", "").strip(), f"{owner}.{f.name} has no help"
        assert "\n" not in f.metadata["help"], f"{owner}.{f.name}: one line"


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


def test_unknown_keys_get_a_hint():
    with pytest.raises(ConfigError) as e:
        config.parse(
            "[watchdog]\nintervall = 5\n[remediation]\nrecover_after = 2\n"
            "[checks.dns]\nslow_afer = 2\nzzz = 1\n"
        )
    errs = {x.split(":")[0]: x.split(": ", 1)[1] for x in e.value.errors}
    assert errs["watchdog.intervall"].startswith('unknown key; did you mean "interval"?')
    # recover_after is a key of every check, not of [remediation].
    assert errs["remediation.recover_after"].startswith(
        "unknown key; it belongs in [checks.bind], [checks.dns], [checks.exit_ip], ... (known: "
    )
    assert errs["checks.dns.slow_afer"].startswith('unknown key; did you mean "slow_after"?')
    assert errs["checks.dns.zzz"].startswith("unknown key (known: ")


@pytest.mark.parametrize("value", ["", "localhost", "127.0.0.1:9879", "300.1.1.1"])
def test_listen_address_says_the_same_for_every_wrong_value(value):
    with pytest.raises(ConfigError) as e:
        config.parse(f'[watchdog]\nlisten_address = "{value}"\n')
    assert e.value.errors == [
        f"watchdog.listen_address: expected {config.LISTEN_ADDRESS_ACCEPTS}, got {json.dumps(value)}"
    ]
    assert config.LISTEN_ADDRESS_ACCEPTS in config.render_example()
    for ok in ("127.0.0.1", "0.0.0.0", "::", "::1", "192.168.1.5"):
        assert config.parse(f'[watchdog]\nlisten_address = "{ok}"\n')


def test_a_missing_password_file_is_a_config_error_at_load(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    missing = tmp_path / "nope"
    f = tmp_path / "c.toml"
    f.write_text(f'[qbittorrent]\npassword_file = "{missing}"\n')
    assert config.load(f)  # the schema alone is fine
    with pytest.raises(ConfigError) as e:
        config.load(f, secrets=True)
    assert e.value.errors == [f"qbittorrent.password_file: no such file: {missing}"]
    f.write_text('[qbittorrent]\npassword_file = ""\n')
    with pytest.raises(ConfigError, match="password_file: not set"):
        config.load(f, secrets=True)
    missing.write_text("")  # an empty file: no password, and that is allowed
    f.write_text(f'[qbittorrent]\npassword_file = "{missing}"\n')
    assert config.load(f, secrets=True)


@pytest.mark.parametrize("text", ["", "example"])
def test_an_empty_config_and_the_example_run_with_the_defaults(tmp_path, monkeypatch, text):
    # "Every key is optional" (README, docs/configuration.md, the example's header):
    # an empty file, or example-config's output, is a whole config; the one file
    # the defaults name, the WebUI password, is all it needs.
    f = tmp_path / "c.toml"
    f.write_text(config.render_example() if text else "")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert config.load(f) == config.Config(source=str(f))
    assert config.Config().qbittorrent.password_file == config.DEFAULT_PASSWORD_FILE
    if not Path(config.DEFAULT_PASSWORD_FILE).exists():
        with pytest.raises(ConfigError) as e:
            config.load(f, secrets=True)
        assert e.value.errors == [
            f"qbittorrent.password_file: no such file: {config.DEFAULT_PASSWORD_FILE} (the default:"
            " write the WebUI password there, or set password_file; an empty file means no password)"
        ]
    # Under systemd the unit's credential stands in for the file.
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / config.Config().qbittorrent.password_credential).write_text("")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert config.load(f, secrets=True) == config.Config(source=str(f))
