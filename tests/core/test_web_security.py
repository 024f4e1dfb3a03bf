"""[web]: TLS and basic auth settings are checked at load; the credential check itself."""

from __future__ import annotations

import base64
import shutil

import pytest

from qbt_vpn_watchdog import config
from qbt_vpn_watchdog.config import ConfigError
from qbt_vpn_watchdog.web_security import load_web_security
from tests.support.tls_files import self_signed

needs_openssl = pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _web(text: str) -> config.WebSection:
    return config.parse(text).web


def test_off_by_default():
    sec = load_web_security(config.Config().web)
    assert sec.scheme == "http" and sec.ssl_context is None
    assert sec.authorized(None)


def test_keys_that_go_together(tmp_path):
    with pytest.raises(ConfigError) as e:
        config.parse('[web]\ntls_cert_file = "/x.crt"\nbasic_auth_password_file = "/pw"\n')
    assert e.value.errors == [
        "web.tls_key_file: needed because web.tls_cert_file is set (set both or neither)",
        "web.basic_auth_username: needed because web.basic_auth_password_file is set"
        " (set both or neither)",
    ]


def test_basic_auth_accepts_exactly_the_user_and_password(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret:with:colons\n")
    sec = load_web_security(
        _web(f'[web]\nbasic_auth_username = "prom"\nbasic_auth_password_file = "{pw}"\n')
    )
    assert sec.authorized(_basic("prom", "s3cret:with:colons"))
    assert sec.authorized("basic " + _basic("prom", "s3cret:with:colons").split()[1])
    for header in (
        None, "", _basic("prom", "s3cret"), _basic("Prom", "s3cret:with:colons"),
        _basic("prom", ""), "Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"prom").decode(),
    ):  # fmt: skip
        assert not sec.authorized(header), header
    assert b"s3cret" not in repr(sec).encode()


def test_password_file_missing_or_empty_is_an_error_naming_the_path(tmp_path):
    pw = tmp_path / "pw"
    web = _web(f'[web]\nbasic_auth_username = "prom"\nbasic_auth_password_file = "{pw}"\n')
    with pytest.raises(ConfigError) as e:
        load_web_security(web)
    assert e.value.errors == [f"web.basic_auth_password_file: no such file: {pw}"]
    pw.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_web_security(web)


@needs_openssl
def test_tls_loads_a_matching_pair_and_refuses_a_mismatch(tmp_path):
    cert, key = self_signed(tmp_path)
    _, other_key = self_signed(tmp_path, "other")
    ok = load_web_security(_web(f'[web]\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'))
    assert ok.scheme == "https" and ok.ssl_context is not None
    with pytest.raises(ConfigError) as e:
        load_web_security(_web(f'[web]\ntls_cert_file = "{cert}"\ntls_key_file = "{other_key}"\n'))
    (msg,) = e.value.errors
    assert msg.startswith(f"web.tls_cert_file/tls_key_file: cannot use {cert} with {other_key}")
    assert "PRIVATE KEY" not in msg
    with pytest.raises(ConfigError, match="no such file"):
        load_web_security(
            _web(f'[web]\ntls_cert_file = "{tmp_path}/none"\ntls_key_file = "{key}"\n')
        )


@needs_openssl
def test_unusable_web_secrets_are_config_errors_at_start(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cert, _ = self_signed(tmp_path)
    qpw = tmp_path / "qpw"
    qpw.write_text("x")
    f = tmp_path / "c.toml"
    f.write_text(
        f'[qbittorrent]\npassword_file = "{qpw}"\n'
        f'[web]\ntls_cert_file = "{cert}"\ntls_key_file = "{tmp_path}/gone.key"\n'
        f'basic_auth_username = "prom"\nbasic_auth_password_file = "{tmp_path}/gone"\n'
    )
    with pytest.raises(ConfigError) as e:
        config.load(f, secrets=True)
    assert e.value.errors == [
        f"web.tls_key_file: no such file: {tmp_path}/gone.key",
        f"web.basic_auth_password_file: no such file: {tmp_path}/gone",
    ]
