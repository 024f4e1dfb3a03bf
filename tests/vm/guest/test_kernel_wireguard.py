"""The production path on the kernel's WireGuard: run inside the kernel VM (tests/vm).

A kernel WireGuard pair between two namespaces (tests/support/wg_pair.py, kernel=True):
namespace a is the confined side (the watchdog's namespace), b the VPN server.
Everything here reads the kernel through the watchdog's own adapters and
checks, built from a config the way the daemon builds them.

Python runs about 50x slower under TCG than on the host: timeouts here are
generous, and nothing asserts a duration that TCG could stretch, except that
events arrive long before the next poll cycle would have.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
from pyroute2 import netns as pr_netns

from qbt_vpn_watchdog.checks import Context, Runner, load_all
from qbt_vpn_watchdog.checks.bind import on_tunnel
from qbt_vpn_watchdog.checks.return_path import HANDSHAKE_RESPONSE_BYTES, pending
from qbt_vpn_watchdog.config import parse
from qbt_vpn_watchdog.sources.build import build_sources
from qbt_vpn_watchdog.sources.links import LinkEvents, Links
from qbt_vpn_watchdog.sources.wireguard import KernelReader
from tests.support.wg_pair import ECHO_PORT, WgPair, _run
from tests.vm.guest.helpers import vpn_pair, watchdog_config

pytestmark = pytest.mark.kernel_vm

FAULT_TABLE = "qvk_fault"


@pytest.fixture(scope="module")
def pair():
    with vpn_pair("qvk", kernel=True, echoes=3) as p:
        yield p


def config(pair: WgPair):
    return parse(watchdog_config(pair, "kernel"))


class Cycles:
    """The daemon's cycle, by hand: handshake and return_path through the real adapters."""

    NAMES = ("handshake", "return_path")

    def __init__(self, pair: WgPair) -> None:
        self.cfg = config(pair)
        self.sources = build_sources(self.cfg)
        self.runner = Runner(load_all())
        self.history: dict[str, list] = {n: [] for n in self.NAMES}

    def run(self) -> dict:
        timeouts = {n: self.cfg.check(n).timeout for n in self.NAMES}
        results = self.runner.run_cycle(Context(self.cfg, self.sources), timeouts, self.history)
        for n, r in results.items():
            self.history[n].append(r)
        return results

    def close(self) -> None:
        self.sources.wireguard.close()
        self.sources.links.close()


@contextlib.contextmanager
def server_drops(pair: WgPair, rules: str):
    """nftables rules on the server's output (its WireGuard port), the tunnels re-created
    behind them (counters from 0); on exit the rules go and the tunnels are re-made."""
    port = pair.port_b
    _run("ip", "netns", "exec", pair.ns_b, "nft", "-f", "-", input=f"""
table inet {FAULT_TABLE} {{
  chain output {{
    type filter hook output priority filter; policy accept;
    {rules.format(port=port)}
  }}
}}
""")  # fmt: skip
    try:
        pair.restart_tunnels()
        yield
    finally:
        _run("ip", "netns", "exec", pair.ns_b, "nft", "delete", "table", "inet", FAULT_TABLE)
        pair.restart_tunnels()
        pair.echo(2, timeout=10)


def send_into_tunnel(pair: WgPair, count: int, size: int = 100) -> None:
    """Datagrams a -> b through the tunnel, not waiting for answers."""
    s = pr_netns.create_socket(pair.ns_a, socket.AF_INET, socket.SOCK_DGRAM, flags=0)
    try:
        for _ in range(count):
            s.sendto(b"x" * size, (pair.tun_b, ECHO_PORT))
    finally:
        s.close()


def wait_for(fn, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(step)


def stable_read(pair: WgPair, reader: KernelReader, wg: str):
    """The reader's device and `wg show dump`, from a moment the counters did not move."""
    for _ in range(5):
        before = pair.dump(wg)
        dev = reader.read()
        if pair.dump(wg) == before:
            return dev, before
    raise AssertionError("the counters never held still for one read")


# --- the reader --------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["a", "b"])
def test_kernel_reader_matches_wg_show_dump(pair, side):
    wg, ns = (pair.wg_a, pair.ns_a) if side == "a" else (pair.wg_b, pair.ns_b)
    pair.echo(2)
    reader = KernelReader(wg, netns=ns)
    try:
        dev, dump = stable_read(pair, reader, wg)
    finally:
        reader.close()
    _private, _public, port, _fwmark = dump[0]
    assert dev.interface == wg and dev.reader == "kernel"
    assert dev.listen_port == int(port)
    assert len(dev.peers) == len(dump) - 1 == 1
    (peer,), row = dev.peers, dump[1]
    key, _psk, endpoint, allowed, handshake, rx, tx, keepalive = row
    assert peer.public_key == key
    assert peer.endpoint == endpoint
    assert ",".join(peer.allowed_ips) == allowed
    assert peer.last_handshake is not None and int(peer.last_handshake) == int(handshake)
    assert (peer.rx_bytes, peer.tx_bytes) == (int(rx), int(tx)) and peer.rx_bytes > 0
    assert peer.persistent_keepalive == (None if keepalive == "off" else int(keepalive))
    # No secret of the device in what the reader returns.
    text = repr(dev)
    assert pair.private_a not in text and pair.private_b not in text


def test_kernel_set_endpoint_changes_only_the_endpoint(pair):
    reader = KernelReader(pair.wg_a, netns=pair.ns_a)
    try:
        before = pair.dump(pair.wg_a)[1]
        reader.set_endpoint(pair.public_b, "172.31.99.6:1637")
        after = pair.dump(pair.wg_a)[1]
        assert after[2] == "172.31.99.6:1637"
        assert after[:2] + after[3:4] + after[7:] == before[:2] + before[3:4] + before[7:]
    finally:
        reader.set_endpoint(pair.public_b, f"{pair.under_b}:{pair.port_b}")
        reader.close()
    pair.echo(1)


# --- handshake and return_path in the three states --------------------------------------


def test_healthy_tunnel_passes_both_checks(pair):
    cycles = Cycles(pair)
    try:
        pair.echo(2)
        r = cycles.run()
    finally:
        cycles.close()
    assert r["handshake"].ok, r["handshake"]
    assert r["return_path"].ok and r["return_path"].observations["probe_answered"] == 1.0, r[
        "return_path"
    ]


def test_the_92_byte_failure(pair):
    # The server lets exactly one handshake response (92 bytes, 120 at layer 3)
    # out and nothing after it: the failure as it was seen on a real box.
    with server_drops(
        pair, "udp sport {port} quota until 120 bytes accept\n    udp sport {port} drop"
    ):
        reader = KernelReader(pair.wg_a, netns=pair.ns_a)
        cycles = Cycles(pair)
        try:
            send_into_tunnel(pair, 20)
            assert wait_for(lambda: reader.read().peers[0].last_handshake, 15), "no handshake"
            first = reader.read().peers[0]
            send_into_tunnel(pair, 20)
            r = cycles.run()
            later = reader.read().peers[0]
        finally:
            cycles.close()
            reader.close()
    assert first.rx_bytes == later.rx_bytes == HANDSHAKE_RESPONSE_BYTES
    assert later.tx_bytes > first.tx_bytes  # data keeps going out
    # The handshake looks fine: that is why a handshake check alone never saw it.
    assert r["handshake"].ok, r["handshake"]
    rp = r["return_path"]
    assert not rp.ok and rp.reason == "handshake_only", rp
    assert rp.observations["peer_rx_bytes"] == HANDSHAKE_RESPONSE_BYTES


def test_data_dropped_while_handshake_responses_pass(pair):
    # Every handshake response (UDP length 8 + 92) gets out, nothing else: the
    # client re-handshakes every 15 s (KEEPALIVE + REKEY timeout) and its peer rx
    # grows by 92 each time. Growing rx must not pass for a working return path.
    rule = "udp sport {port} udp length != 100 drop"
    stop = threading.Event()

    def traffic() -> None:
        while not stop.wait(0.5):
            send_into_tunnel(pair, 2)

    with server_drops(pair, rule):
        cycles = Cycles(pair)
        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        results = []
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                r = cycles.run()["return_path"]
                results.append(r)
                if r.observations.get("peer_rx_bytes", 0) >= 2 * HANDSHAKE_RESPONSE_BYTES and (
                    not r.ok
                ):
                    break
                time.sleep(2)
        finally:
            stop.set()
            sender.join()
            cycles.close()
    last = results[-1]
    rx = last.observations["peer_rx_bytes"]
    assert rx >= 2 * HANDSHAKE_RESPONSE_BYTES and rx % HANDSHAKE_RESPONSE_BYTES == 0, results
    assert not last.ok and last.reason == "handshake_only", last
    # Never a pass on evidence while the return path was broken; only "collecting".
    for r in results:
        assert not r.ok or pending(r), r


# --- link events ------------------------------------------------------------------------


def test_tunnel_set_down_and_deleted_are_reported_at_once(pair):
    fired: list[float] = []
    ev = LinkEvents(pair.ns_a, pair.wg_a, poll=0.2)
    cycles = Cycles(pair)
    try:
        ev.start(lambda: fired.append(time.monotonic()))
        time.sleep(2)  # subscribed (slow under TCG)
        t0 = time.monotonic()
        _run("ip", "-n", pair.ns_a, "link", "set", pair.wg_a, "down")
        assert wait_for(lambda: fired, 5), "tunnel set down: no event"
        down_after = fired[0] - t0
        r = cycles.run()
        assert not r["return_path"].ok and r["return_path"].reason == "no_tunnel"
        assert "down" in r["return_path"].detail
        # Coming back up is the next cycle's business, not an event.
        fired.clear()
        _run("ip", "-n", pair.ns_a, "link", "set", pair.wg_a, "up")
        time.sleep(1)
        assert fired == []
        t0 = time.monotonic()
        _run("ip", "-n", pair.ns_a, "link", "del", pair.wg_a)
        assert wait_for(lambda: fired, 5), "tunnel deleted: no event"
        deleted_after = fired[0] - t0
        r = cycles.run()
        assert not r["handshake"].ok and r["handshake"].reason == "missing", r["handshake"]
        assert not r["return_path"].ok and r["return_path"].reason == "no_tunnel"
    finally:
        ev.close()
        cycles.close()
        with contextlib.suppress(RuntimeError):
            _run("ip", "-n", pair.ns_a, "link", "del", pair.wg_a)
        with contextlib.suppress(RuntimeError):
            _run("ip", "-n", pair.ns_b, "link", "del", pair.wg_b)
        pair._make_tunnels()
        pair.echo(2, timeout=10)
    # "At once": well within one poll interval (10 s), even 50x slower under TCG.
    assert down_after < 2 and deleted_after < 2, (down_after, deleted_after)
    print(f"events after {down_after:.2f} s (down), {deleted_after:.2f} s (deleted)")


# --- bind: qBittorrent's listening socket on a kernel tunnel -----------------------------


def test_socket_table_sees_a_listener_bound_to_the_kernel_tunnel(pair):
    port = 51413
    s = pr_netns.create_socket(pair.ns_a, socket.AF_INET, socket.SOCK_STREAM, flags=0)
    links = Links(pair.ns_a)
    try:
        # What qBittorrent does with Session\Interface=wg0: SO_BINDTODEVICE, then listen.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, pair.wg_a.encode())
        s.bind(("0.0.0.0", port))
        s.listen()
        link = links.link(pair.wg_a)
        listeners = links.tcp_listeners(port)
        assert [x.ifindex for x in listeners] == [link.index]
        assert on_tunnel(listeners, link)
        # The tunnel re-created (a restarted VPN unit): a new index, the socket stays on the old.
        pair.restart_tunnels()
        new = links.link(pair.wg_a)
        assert new.index != link.index
        assert not on_tunnel(links.tcp_listeners(port), new)
        s.close()
        assert links.tcp_listeners(port) == ()
    finally:
        s.close()
        links.close()
    pair.echo(2, timeout=10)
