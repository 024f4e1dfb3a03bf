"""Build the real adapters from a config: the one place that knows every constructor."""

from __future__ import annotations

from functools import partial

from qbt_vpn_watchdog.config import Config, read_password
from qbt_vpn_watchdog.sources import Sources


def build_sources(cfg: Config) -> Sources:
    from qbt_vpn_watchdog.sources.dns import Resolver, vpn_resolver
    from qbt_vpn_watchdog.sources.http import Http
    from qbt_vpn_watchdog.sources.killswitch import KillSwitchProbe
    from qbt_vpn_watchdog.sources.links import LinkEvents, Links
    from qbt_vpn_watchdog.sources.pmtu import PathMtuProbe
    from qbt_vpn_watchdog.sources.qbittorrent import Qbittorrent
    from qbt_vpn_watchdog.sources.tcp import TcpConnect
    from qbt_vpn_watchdog.sources.wireguard import make_reader

    netns = cfg.netns
    resolver = Resolver(netns)
    nameserver = vpn_resolver(cfg, resolver)
    q = cfg.qbittorrent
    return Sources(
        wireguard=make_reader(cfg),
        links=Links(netns),
        dns=resolver,
        http=Http(netns, resolver, nameserver),
        qbittorrent=Qbittorrent(q.url, q.username, partial(read_password, q), q.timeout),
        events=LinkEvents(netns, cfg.wireguard.interface),
        pmtu=PathMtuProbe(netns),
        killswitch=KillSwitchProbe(netns),
        tcp=TcpConnect(),
    )
