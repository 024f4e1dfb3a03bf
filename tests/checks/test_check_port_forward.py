"""port_forward: the real TCP connect against loopback listeners (nothing leaves the host)."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from qbt_vpn_watchdog.checks import classify, port_forward
from qbt_vpn_watchdog.config import Config
from qbt_vpn_watchdog.results import DEGRADED, CheckResult
from qbt_vpn_watchdog.sources.tcp import TcpConnect
from tests.support.fakes import Fixed, context
from tests.support.monitoring import free_port


def cfg(port: int, exit_ip: str = "127.0.0.1") -> Config:
    c = Config()
    return dataclasses.replace(
        c,
        qbittorrent=dataclasses.replace(c.qbittorrent, forwarded_port=port),
        checks=dataclasses.replace(
            c.checks, port_forward=dataclasses.replace(c.checks.port_forward, exit_ip=exit_ip)
        ),
    )


@pytest.fixture
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_an_answering_port_passes(listener):
    o = port_forward.check(context(cfg(listener), tcp=TcpConnect()))
    assert o.ok, o.detail
    assert f"127.0.0.1:{listener} answered from the host" in o.detail
    assert 0 < o.observations["connect_seconds"] < 1


def test_a_refused_port_is_closed_and_names_the_port_qbittorrent_listens_on():
    class Qbt:
        state = Fixed(type("S", (), {"listen_port": 51413})())

    port = free_port()
    o = port_forward.check(context(cfg(port), tcp=TcpConnect(), qbittorrent=Qbt()))
    assert (o.ok, o.reason) == (False, "closed")
    assert "refused" in o.detail
    assert f"qBittorrent listens on port 51413, not the forwarded {port}" in o.detail
    assert classify("port_forward", "closed") == DEGRADED


def test_no_forwarded_port_is_not_configured():
    o = port_forward.check(context(cfg(0), tcp=TcpConnect()))
    assert o.reason == "not_configured"


def test_no_exit_address_known_yet(listener):
    o = port_forward.check(context(cfg(listener, exit_ip=""), tcp=TcpConnect()))
    assert o.reason == "no_exit_ip"
    assert o.provisional, "run again in a second, not 300 s later"
    first = CheckResult.from_outcome("port_forward", o, 0.0, 0.0)
    again = port_forward.check(
        context(cfg(listener, exit_ip=""), history=[first], tcp=TcpConnect())
    )
    assert again.reason == "no_exit_ip" and not again.provisional, "only once"
    ctx = context(cfg(listener, exit_ip=""), tcp=TcpConnect())
    ctx.exit_ip = "127.0.0.1"  # what the loop hands in: exit_ip's last address
    assert port_forward.check(ctx).ok


def test_every_reason_is_degraded_never_acted_on():
    for reason in port_forward.REASONS:
        assert reason.severity == DEGRADED and not reason.restart
