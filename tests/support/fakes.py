"""Small fakes of the source interfaces, for the pure logic behind them.

Only checks' decision logic is tested with these; every adapter has its own
tests against real wireguard-go, dnsmasq, qbittorrent-nox and loopback servers.
"""

from __future__ import annotations

from qbt_vpn_watchdog.checks import Context
from qbt_vpn_watchdog.config import Config
from qbt_vpn_watchdog.sources import Listener, SourceError, Sources


class Fixed:
    """A reader returning a fixed value (or raising a fixed SourceError)."""

    def __init__(self, value=None, error: SourceError | None = None):
        self.value, self.error, self.calls = value, error, 0

    def __call__(self, *a, **kw):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.value


class FakeWireguard:
    def __init__(self, device=None, error=None):
        self.read = Fixed(device, error)


class FakeLinks:
    """Links, routes and listeners. ``listeners`` maps port -> tuple of Listener; without
    it every link listens on every port at its first address, bound to its index
    (what a healthy qBittorrent bound to the tunnel looks like). ``routes`` answers
    ``route_interface``; ``table`` maps a family to what ``routes(family)`` returns
    (a tuple of Route, or a SourceError to raise)."""

    def __init__(self, links=None, routes=None, listeners=None, table=None):
        self.links, self.route_map = dict(links or {}), dict(routes or {})
        self.listeners = None if listeners is None else dict(listeners)
        self.table = dict(table or {})

    def link(self, name):
        return self.links.get(name)

    def route_interface(self, dst):
        return self.route_map.get(dst)

    def routes(self, family):
        value = self.table.get(family, ())
        if isinstance(value, SourceError):
            raise value
        return value

    def tcp_listeners(self, port):
        if self.listeners is not None:
            value = self.listeners.get(port, ())
            if isinstance(value, SourceError):
                raise value
            return value
        return tuple(
            Listener(ls.addresses[0].split("/")[0], port, ls.index)
            for ls in self.links.values()
            if ls.addresses
        )


class FakeDns:
    """A namespace whose resolv.conf names ``nameserver``; queries answer with ``answer``."""

    def __init__(self, nameserver=None, answer=None, error=None):
        self.nameserver = lambda: nameserver
        self.query = Fixed(answer, error)


def sources(**kw) -> Sources:
    base = dict(
        wireguard=FakeWireguard(), links=FakeLinks(), dns=FakeDns(), http=None, qbittorrent=None
    )
    base.update(kw)
    return Sources(**base)


def context(
    cfg: Config | None = None, now: float = 1_000_000.0, history=(), monotonic=None, **kw
) -> Context:
    ctx = Context(cfg or Config(), sources(**kw), history, lambda: now)
    if monotonic is not None:
        ctx.monotonic = lambda: monotonic
    return ctx
