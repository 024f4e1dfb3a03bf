"""TOML configuration -> frozen dataclasses, with every error reported at once.

The dataclasses are the schema (schema.py): each field's type and metadata
(fields.py) say what is accepted. ``load()`` (loading.py) walks the TOML
against them, collects every problem as "key.path: expected ..., got ..." and
raises one ``ConfigError`` (errors.py) listing them all. Unknown keys are
errors: a typo must never silently disable a check. ``render_example()``
(example.py) prints the schema as the commented example config.

Secrets are never in the config: only paths to files holding them
(``qbittorrent.password_file``, or ``$CREDENTIALS_DIRECTORY/<name>`` under
systemd ``LoadCredential=``). ``read_password()`` reads them when needed.

Import from here (``from qbt_vpn_watchdog.config import load, Config``); the
modules inside are how the package is arranged, not its interface.
"""

from __future__ import annotations

from qbt_vpn_watchdog.config.errors import ConfigError
from qbt_vpn_watchdog.config.example import example_path, render_example
from qbt_vpn_watchdog.config.fields import LISTEN_ADDRESS_ACCEPTS
from qbt_vpn_watchdog.config.loading import (
    _key_paths,
    listen_flag,
    load,
    parse,
    read_password,
    secret_errors,
    set_flags,
)
from qbt_vpn_watchdog.config.schema import (
    DEFAULT_PASSWORD_FILE,
    DEFAULT_PORT,
    LOG_FORMATS,
    LOG_LEVELS,
    BindCheck,
    CheckBase,
    ChecksSection,
    Config,
    DnsCheck,
    ExitIpCheck,
    HandshakeCheck,
    Ipv6Check,
    NamespaceSection,
    PathMtuCheck,
    QbittorrentSection,
    RemediationSection,
    ReturnPathCheck,
    WatchdogSection,
    WebSection,
    WebuiCheck,
    WireguardSection,
)

__all__ = [
    "DEFAULT_PASSWORD_FILE", "DEFAULT_PORT", "LISTEN_ADDRESS_ACCEPTS", "LOG_FORMATS", "LOG_LEVELS",
    "BindCheck", "CheckBase", "ChecksSection", "Config",
    "ConfigError", "DnsCheck", "ExitIpCheck", "HandshakeCheck", "Ipv6Check", "NamespaceSection",
    "PathMtuCheck", "QbittorrentSection", "RemediationSection", "ReturnPathCheck",
    "WatchdogSection", "WebSection", "WebuiCheck", "WireguardSection", "_key_paths",
    "example_path", "listen_flag", "load", "parse", "read_password", "render_example",
    "secret_errors", "set_flags",
]  # fmt: skip
