"""What a schema field is: its default, one line of help, and its validator.

Validators take a value of the right type and return ``None`` or what was
expected instead ("a port number 1-65535"); the loader adds the key path and
the value it got.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import field
from urllib.parse import urlsplit


def _positive(v: float) -> str | None:
    return None if v > 0 else "a positive number of seconds"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "a number of seconds >= 0"


def _port(v: int) -> str | None:
    return None if 0 < v < 65536 else "a port number 1-65535"


def _port_or_zero(v: int) -> str | None:
    return None if 0 <= v < 65536 else "a port number 1-65535, or 0 for none"


def _count(v: int) -> str | None:
    return None if v >= 1 else "a whole number >= 1"


def _one_of(*choices: str):
    def check(v: str) -> str | None:
        return None if v in choices else "one of " + ", ".join(f'"{c}"' for c in choices)

    return check


def _url(v: str) -> str | None:
    try:
        u = urlsplit(v)
    except ValueError:
        return "an http:// or https:// URL"
    if u.scheme not in ("http", "https") or not u.hostname:
        return "an http:// or https:// URL"
    return None


def _url_or_empty(v: str) -> str | None:
    return None if v == "" else _url(v)


def _ip_or_empty(v: str) -> str | None:
    if v == "":
        return None
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return 'an IP address, or ""'
    return None


def _ipv4_or_empty(v: str) -> str | None:
    if v == "":
        return None
    try:
        ipaddress.IPv4Address(v)
    except ValueError:
        return 'an IPv4 address inside the tunnel, or "" for the VPN\'s resolver'
    return None


def _ips(v: list) -> str | None:
    for x in v:
        try:
            ipaddress.ip_address(x)
        except ValueError:
            return "a list of IP addresses"
    return None


def _ipv6_prefixes(v: list) -> str | None:
    for x in v:
        try:
            ipaddress.IPv6Network(x, strict=False)
        except (ValueError, TypeError):
            return 'a list of IPv6 prefixes, e.g. ["fd51:7a6c::/48"]'
    return None


def _ifname(v: str) -> str | None:
    # Linux IFNAMSIZ is 16 including the NUL; no slashes or spaces.
    if 0 < len(v) < 16 and "/" not in v and not any(c.isspace() for c in v):
        return None
    return "an interface name (1-15 characters, no '/' or spaces)"


def _netns_name(v: str) -> str | None:
    if v == "" or ("/" not in v and v not in (".", "..") and not any(c.isspace() for c in v)):
        return None
    return 'a network namespace name as in `ip netns list`, or "" for the root namespace'


def _names(v: list) -> str | None:
    return (
        None if v and all(isinstance(x, str) and x for x in v) else "a non-empty list of DNS names"
    )


def _unit_or_empty(v: str) -> str | None:
    # A systemd unit name as an argv element: never an option, never a path.
    if v == "" or (re.fullmatch(r"[A-Za-z0-9:_.@\\-]+", v) and not v.startswith("-")):
        return None
    return 'a systemd unit name such as "wg-quick-wg0.service", or "" for none'


def _argv(v: list) -> str | None:
    # An argv list, run without a shell; [] = none.
    if v == [] or (all(isinstance(x, str) and x for x in v) and not v[0].startswith("-")):
        return None
    return 'a command as a list of arguments, e.g. ["/run/current-system/sw/bin/my-restart", "wg0"], or []'


def _host_port(v: str) -> str | None:
    host, sep, port = v.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if (
        sep
        and host
        and port.isdigit()
        and 0 < int(port) < 65536
        and not any(c.isspace() for c in host)
    ):
        return None
    return '"host:port" (IPv6 as "[addr]:port")'


def _host_port_or_empty(v: str) -> str | None:
    return None if v == "" else _host_port(v)


def _host_ports(v: list) -> str | None:
    for x in v:
        if _host_port(x):
            return 'a list of "host:port" endpoints'
    return None


def _tag(v: str) -> str | None:
    # qBittorrent separates tags with commas.
    if v and "," not in v and v == v.strip():
        return None
    return "a non-empty qBittorrent tag without commas or surrounding spaces"


def _listen_address(v: str) -> str | None:
    # The same words for every wrong value, empty or not.
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return LISTEN_ADDRESS_ACCEPTS
    return None


def _max_connections(v: int) -> str | None:
    return None if 1 <= v <= 1024 else "a whole number 1-1024"


LISTEN_ADDRESS_ACCEPTS = 'an IP address, IPv4 or IPv6 (e.g. "127.0.0.1", "0.0.0.0" or "::")'


def _key(
    default: object = dataclasses.MISSING, *, help: str, check=None, factory=None, instead=""
):
    """A schema field: its default, one line saying what it means, its validator.

    ``help`` is what ``example-config`` prints above the key, so every key
    explains itself where an operator reads it; ``instead`` is a line the
    example shows as the one to use in place of the default where the help says
    when (only ``watchdog.mode``: "observe" on a new host).
    """
    meta = {"help": help}
    if instead:
        meta["instead"] = instead
    if check is not None:
        meta["check"] = check
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


TIMEOUT_HELP = "Seconds the check may take before it fails with reason timeout."
INTERVAL_HELP = "Seconds between runs; 0 = every cycle."


def _timeout(default: float, why: str = ""):
    """A check's ``timeout``: every check says it in the same words (``why`` adds its own)."""
    return _key(default, help=" ".join(filter(None, (TIMEOUT_HELP, why))), check=_positive)


def _interval(default: float, why: str = ""):
    """A check's ``interval``: the same words for every check, and why its default is what it is."""
    return _key(default, help=" ".join(filter(None, (INTERVAL_HELP, why))), check=_non_negative)


def _section(cls: type):
    return field(default_factory=cls, metadata={"help": ""})
