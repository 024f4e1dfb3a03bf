"""Links (rtnetlink in a namespace) against real wireguard-go and veth links."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from qbt_vpn_watchdog.sources import SourceError
from qbt_vpn_watchdog.sources.links import LinkEvents, Links
from qbt_vpn_watchdog.sources.netlink_thread import NetlinkThread
from tests.support.session_names import unique
from tests.support.wg_pair import wg_pair_fixture

wg_pair = wg_pair_fixture("qvw")  # namespaces qvw<session>-a/-b, interfaces qvw<session>a0/b0


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def links(wg_pair):
    lk = Links(wg_pair.ns_a)
    yield lk
    lk.close()


@pytest.mark.root
def test_wireguard_link(links, wg_pair):
    wg_pair.echo(1)
    before = links.link(wg_pair.wg_a)
    assert before is not None
    assert before.name == wg_pair.wg_a
    assert before.up  # operstate UNKNOWN, IFF_UP: up
    assert before.mtu == 1420  # wireguard-go's default
    assert f"{wg_pair.tun_a}/24" in before.addresses
    wg_pair.echo(5, size=600)
    after = links.link(wg_pair.wg_a)
    # Inner (decrypted) traffic: 5 datagrams of 600 bytes + 28 bytes IP/UDP each way.
    assert after.tx_bytes - before.tx_bytes >= 5 * 628
    assert after.rx_bytes - before.rx_bytes >= 5 * 628
    assert after.tx_packets - before.tx_packets >= 5
    assert after.rx_packets - before.rx_packets >= 5
    assert after.index == before.index


@pytest.mark.root
def test_veth_link_and_missing_link(links, wg_pair):
    veth = links.link(wg_pair.veth_a)
    assert veth is not None and veth.up and veth.mtu == 1500
    assert f"{wg_pair.under_a}/30" in veth.addresses
    assert links.link("qvwnosuch0") is None
    assert links.link(wg_pair.wg_b) is None  # lives in the other namespace


@pytest.mark.root
def test_down_links(links, wg_pair):
    # A private veth pair inside ns a, so the shared tunnel is not disturbed.
    ip("-n", wg_pair.ns_a, "link", "add", "qvwx1", "type", "veth", "peer", "name", "qvwx2")
    try:
        assert links.link("qvwx1").up is False  # administratively down
        ip("-n", wg_pair.ns_a, "link", "set", "qvwx1", "up")
        # Up, but its peer is down: operstate LOWERLAYERDOWN, cannot pass traffic.
        assert links.link("qvwx1").up is False
        ip("-n", wg_pair.ns_a, "link", "set", "qvwx2", "up")
        assert links.link("qvwx1").up is True
    finally:
        ip("-n", wg_pair.ns_a, "link", "del", "qvwx1")


@pytest.mark.root
def test_route_interface(links, wg_pair):
    assert links.route_interface(wg_pair.tun_b) == wg_pair.wg_a  # through the tunnel
    assert links.route_interface(wg_pair.under_b) == wg_pair.veth_a
    assert links.route_interface(wg_pair.tun_a) == "lo"  # a local address
    assert links.route_interface("10.99.1.5") is None  # allowed IP, but no route
    assert links.route_interface("fd00::1") is None
    # The namespace has no default route: nothing is reachable beyond the lab.
    assert links.route_interface("192.0.2.1") is None
    ns = wg_pair.ns_a
    ip("-n", ns, "route", "add", "blackhole", "192.0.2.0/24")
    ip("-n", ns, "route", "add", "unreachable", "198.51.100.0/24")
    ip("-n", ns, "route", "add", "prohibit", "203.0.113.0/24")
    try:
        for dst in ("192.0.2.1", "198.51.100.1", "203.0.113.1"):
            assert links.route_interface(dst) is None, dst
    finally:
        for p in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"):
            subprocess.run(["ip", "-n", ns, "route", "del", p], capture_output=True)
    with pytest.raises(ValueError):
        links.route_interface("not-an-address")


@pytest.mark.root
def test_one_socket_across_threads(links, wg_pair):
    # The check runner calls from a fresh thread each cycle: no socket per thread.
    links.link(wg_pair.wg_a)
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        t = threading.Thread(target=links.link, args=(wg_pair.wg_a,))
        t.start()
        t.join()
    assert len(os.listdir("/proc/self/fd")) == fds
    assert links._nl.opened == 1


@pytest.mark.root
def test_missing_namespace_is_not_created():
    name = "qvw-missing"
    assert not Path("/run/netns", name).exists()
    lk = Links(name)
    try:
        for call in (lambda: lk.link("lo"), lambda: lk.route_interface("127.0.0.1")):
            with pytest.raises(SourceError) as e:
                call()
            assert e.value.kind == "missing"
            assert name in str(e.value)
    finally:
        lk.close()
    assert not Path("/run/netns", name).exists()


@pytest.mark.root
def test_namespace_recreated_under_the_same_name():
    name = unique("qvw-c")
    ip("netns", "add", name)
    lk = Links(name)
    try:
        assert lk.link("lo") is not None
        assert lk.link("qvwd0") is None
        ip("netns", "del", name)
        with pytest.raises(SourceError) as e:
            lk.link("lo")
        assert e.value.kind == "missing"
        # A restarted VPN service re-creates the namespace: read the new one,
        # not the old one the open socket still pins.
        ip("netns", "add", name)
        ip("-n", name, "link", "add", "qvwd0", "type", "veth", "peer", "name", "qvwd1")
        assert lk.link("qvwd0") is not None
        assert lk._nl.opened == 2
    finally:
        lk.close()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# --- the worker thread's own logic (no root needed) -------------------------------


class FakeSock:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_worker_reopens_after_an_error_and_after_a_hang():
    socks: list[FakeSock] = []

    def factory() -> FakeSock:
        socks.append(FakeSock())
        return socks[-1]

    nl = NetlinkThread(factory, netns=None, name="qvw-test", timeout=0.2)
    threads = set()
    assert nl.call(lambda s: threads.add(threading.get_ident()) or s, "x") is socks[0]
    assert nl.call(lambda s: threads.add(threading.get_ident()) or s, "x") is socks[0]
    assert len(threads) == 1 and threading.get_ident() not in threads

    def broken(s):
        raise OSError("socket went away")

    with pytest.raises(OSError):
        nl.call(broken, "x")
    assert socks[0].closed
    assert nl.call(lambda s: s, "x") is socks[1]  # reopened

    release = threading.Event()
    with pytest.raises(SourceError) as e:
        nl.call(lambda s: release.wait(5), "reading qvw")
    assert e.value.kind == "timeout" and "reading qvw" in str(e.value)
    # The next call does not queue behind the stuck one: a new worker, a new socket.
    assert nl.call(lambda s: s, "x") is socks[2]
    release.set()
    nl.close()
    assert socks[2].closed
    for _ in range(50):  # the abandoned worker closes its socket once it returns
        if socks[1].closed:
            break
        threading.Event().wait(0.02)
    assert socks[1].closed


# --- link events --------------------------------------------------------------------


def _wait(cond, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.root
def test_link_events_report_the_tunnel_going_not_coming():
    name = unique("qvw-ev")
    ip("netns", "add", name)
    fired = []
    ev = LinkEvents(name, "qvwe0", poll=0.2)
    try:
        ev.start(lambda: fired.append(time.monotonic()))
        time.sleep(0.3)  # subscribed
        # Links coming up are the next cycle's business, not an event's.
        ip("-n", name, "link", "add", "qvwe0", "type", "veth", "peer", "name", "qvwe1")
        ip("-n", name, "link", "set", "qvwe0", "up")
        ip("-n", name, "link", "set", "qvwe1", "up")
        time.sleep(0.5)
        assert fired == []
        # Another link going down is not the tunnel.
        ip("-n", name, "link", "set", "qvwe1", "down")
        time.sleep(0.3)
        n = len(fired)
        ip("-n", name, "link", "set", "qvwe1", "up")
        ip("-n", name, "addr", "add", "10.77.9.2/30", "dev", "qvwe0")
        time.sleep(0.3)
        fired.clear()
        # The tunnel's address removed, the tunnel down, the tunnel deleted: each an event.
        t0 = time.monotonic()
        ip("-n", name, "addr", "del", "10.77.9.2/30", "dev", "qvwe0")
        assert _wait(lambda: fired), "address removed: no event"
        assert fired[0] - t0 < 0.5
        fired.clear()
        ip("-n", name, "link", "set", "qvwe0", "down")
        assert _wait(lambda: fired), "link down: no event"
        fired.clear()
        ip("-n", name, "link", "del", "qvwe0")
        assert _wait(lambda: fired), "link deleted: no event"
        assert n == 0, "another link's state change woke the loop"
    finally:
        ev.close()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.mark.root
def test_link_events_wait_for_a_missing_namespace_and_follow_a_recreated_one():
    name = unique("qvw-ev2")
    assert not Path("/run/netns", name).exists()
    fired = []
    ev = LinkEvents(name, "qvwf0", poll=0.1)
    ev.start(lambda: fired.append(1))
    try:
        time.sleep(0.4)
        assert not Path("/run/netns", name).exists(), "the watcher created the namespace"
        ip("netns", "add", name)
        ip("-n", name, "link", "add", "qvwf0", "type", "veth", "peer", "name", "qvwf1")
        time.sleep(0.5)  # the watcher found it
        ip("-n", name, "link", "del", "qvwf0")
        assert _wait(lambda: fired)
        # Re-created under the same name: the old socket would watch the dead one.
        ip("netns", "del", name)
        ip("netns", "add", name)
        ip("-n", name, "link", "add", "qvwf0", "type", "veth", "peer", "name", "qvwf1")
        time.sleep(0.5)
        fired.clear()
        ip("-n", name, "link", "del", "qvwf0")
        assert _wait(lambda: fired)
    finally:
        ev.close()
        assert not ev._thread.is_alive()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
