"""The return-path decision: property tests over counter sequences, and examples."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qbt_vpn_watchdog.checks.return_path import HANDSHAKE_RESPONSE_BYTES, Sample, assess

WINDOW = 15.0
MIN_TX = 1024
KEY = "peerkey="


def _run(steps, interval=10.0, probe=True, answered=None, start=None):
    """Fold (d_peer_rx, d_peer_tx, d_in_rx, d_in_tx) steps into samples; assess each."""
    s = start or Sample(0.0, KEY, HANDSHAKE_RESPONSE_BYTES, 148, 0, 0, False, False)
    history, verdicts = [], []
    for i, (prx, ptx, irx, itx) in enumerate(steps):
        ans = answered(i) if answered else False
        s = Sample(
            s.at + interval,
            KEY,
            s.peer_rx + prx,
            s.peer_tx + ptx,
            s.inner_rx + irx,
            s.inner_tx + itx,
            probe,
            ans,
        )
        verdicts.append(assess(history, s, MIN_TX, WINDOW))
        history.append(s)
    return verdicts


traffic = st.integers(min_value=1, max_value=50_000_000)
intervals = st.floats(min_value=1.0, max_value=60.0)


@settings(max_examples=300)
@given(st.lists(st.tuples(traffic, traffic), min_size=1, max_size=40), intervals, st.booleans())
def test_never_fires_on_symmetric_traffic(pairs, interval, probe):
    # Whatever goes out, something decrypted comes back in the same step.
    steps = [(rx + 32, tx + 32, rx, tx) for tx, rx in pairs]
    assert all(v.ok for v in _run(steps, interval, probe))


@settings(max_examples=300)
@given(st.lists(st.tuples(traffic, traffic), min_size=1, max_size=40), intervals)
def test_never_fires_on_saturated_download_with_tiny_upload(pairs, interval):
    # A saturated healthy download: rx huge, tx only ACKs; a step may even carry no tx.
    steps = [(rx, tx % 2000, rx, tx % 1500) for rx, tx in pairs]
    assert all(v.ok for v in _run(steps, interval, probe=False))


@settings(max_examples=300)
@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=60), intervals)
def test_never_fires_on_idle_tunnel(handshakes, interval):
    # Idle: our own persistent keepalives (32 B) and re-handshakes go out, only
    # handshake responses come in, no inner traffic at all, no probe possible.
    steps = [(k * HANDSHAKE_RESPONSE_BYTES, 32 + k * 148, 0, 0) for k in handshakes]
    assert all(v.ok for v in _run(steps, interval, probe=False))


@settings(max_examples=300)
@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=60), intervals)
def test_never_fires_when_probes_are_answered(handshakes, interval):
    # The probe's answer wins even if counters look odd.
    steps = [(k * HANDSHAKE_RESPONSE_BYTES, 100, 0, 60) for k in handshakes]
    assert all(v.ok for v in _run(steps, interval, answered=lambda i: True))


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.integers(0, 2), traffic), min_size=1, max_size=40),
    intervals,
    st.booleans(),
)
def test_always_fires_on_the_92_byte_pattern(steps_in, interval, probe):
    # Data goes out, peer rx grows only by whole handshake responses (or not at
    # all), nothing decrypted comes back: once the window is covered, it fails.
    steps = [(k * HANDSHAKE_RESPONSE_BYTES, tx + 148 * k, 0, tx + MIN_TX) for k, tx in steps_in]
    verdicts = _run(steps, interval, probe)
    for i, v in enumerate(verdicts):
        covered = (i + 1) * interval >= WINDOW  # the base sample is the starting point
        if covered:
            assert not v.ok, (i, v)
            assert v.reason in ("handshake_only", "no_return_traffic")


def test_seed_state_is_recognised_on_the_first_sample():
    # The watchdog started on an already broken box: rx 92, tx 3.51 GB, inner rx 0.
    s = Sample(100.0, KEY, 92, 3_510_000_000, 0, 3_400_000_000, True, False)
    v = assess([], s, MIN_TX, WINDOW)
    assert not v.ok and v.reason == "handshake_only" and "1 handshake response" in v.detail


def test_keepalive_from_peer_proves_the_return_path_even_if_dns_is_dead():
    # Resolver dead, tunnel fine: our probe gets no answer, but the server's
    # passive keepalive (32 B) arrives within KEEPALIVE_TIMEOUT.
    steps = [(32, 200, 0, 60)] * 5
    assert all(v.ok for v in _run(steps, 10.0, probe=True))


def test_detection_takes_two_intervals_at_the_default_interval():
    healthy = [(500, 500, 400, 400)] * 3
    broken = [(0, 5000, 0, 4000)] * 3
    verdicts = _run(healthy + broken, 10.0, probe=True)
    first_fail = next(i for i, v in enumerate(verdicts) if not v.ok)
    assert first_fail - len(healthy) == 1  # the 2nd broken cycle: 2 intervals after the fault
    assert verdicts[first_fail].reason == "no_return_traffic"


def test_counter_reset_after_tunnel_restart_is_not_negative_traffic():
    start = Sample(0.0, KEY, 10_000, 10_000, 9_000, 9_000, True, True)
    s1 = Sample(20.0, KEY, 92, 300, 100, 200, True, False)  # restarted: counters from 0
    v = assess([start], s1, MIN_TX, WINDOW)
    assert v.ok and "-" not in v.detail


def test_after_a_restart_the_seed_state_is_judged_at_once():
    # Answered probes of the old tunnel are within the window, but the tunnel
    # was re-created (counters from 0) and the new one shows the 92-byte failure's state:
    # 92 bytes back, data out, nothing decrypted. Old answers prove nothing.
    old = [Sample(float(t), KEY, 50_000, 60_000, 40_000, 45_000, True, True) for t in (0, 2, 4)]
    now = Sample(6.0, KEY, 92, 4_000, 0, 2_000, True, False)
    v = assess(old, now, MIN_TX, WINDOW)
    assert not v.ok and v.reason == "handshake_only"
    # Without the restart, the same old answers keep it ok until the window passes.
    same = Sample(6.0, KEY, 50_092, 64_000, 40_000, 47_000, True, False)
    assert assess(old, same, MIN_TX, WINDOW).ok


def test_samples_before_a_reset_are_never_a_base():
    # Old tunnel: healthy, 20 s ago. New tunnel since 8 s: tiny counters, idle.
    old = Sample(0.0, KEY, 90_000, 90_000, 80_000, 80_000, True, True)
    new1 = Sample(12.0, KEY, 92, 180, 0, 0, False, False)
    now = Sample(20.0, KEY, 92, 212, 0, 0, False, False)
    v = assess([old, new1], now, MIN_TX, WINDOW)
    assert v.ok and v.detail.startswith("collecting evidence")


def test_other_peer_history_is_ignored():
    old = Sample(0.0, "other", 0, 0, 0, 0, True, False)
    now = Sample(30.0, KEY, 0, 5000, 0, 5000, True, False)
    assert assess([old], now, MIN_TX, WINDOW).ok  # no same-peer base yet


# --- the check's own state: a typed home, not observations -----------------------------


def test_a_verdict_without_a_window_is_pending_and_says_so_in_a_field():
    s = Sample(0.0, KEY, 0, 148, 0, 0, True, False)
    v = assess([], s, MIN_TX, WINDOW)
    assert v.ok and v.pending
    assert not assess([], Sample(0.0, KEY, 0, 148, 0, 0, True, True), MIN_TX, WINDOW).pending
    later = Sample(20.0, KEY, 0, 300, 0, 0, True, False)
    assert not assess([s], later, MIN_TX, WINDOW).pending  # a window: a real verdict


def _check_run(history=(), now=1000.0, rx=92, tx=148, inner_tx=0):
    from qbt_vpn_watchdog.checks import load_all
    from qbt_vpn_watchdog.results import CheckResult
    from qbt_vpn_watchdog.sources import LinkState, WgDevice, WgPeer
    from tests.support.fakes import FakeLinks, FakeWireguard, context

    dev = WgDevice(
        "wg0", "uapi", None, (WgPeer(KEY, "192.0.2.1:1637", now - 5, rx, tx, ("0.0.0.0/0",)),)
    )
    wg0 = LinkState("wg0", 7, True, 1420, ("10.64.0.2/32",), 0, inner_tx, 0, 0)
    ctx = context(
        now=now, history=history, wireguard=FakeWireguard(dev), links=FakeLinks({"wg0": wg0})
    )
    o = load_all()["return_path"].fn(ctx)
    return CheckResult.from_outcome("return_path", o, now, 0.01)


def test_the_check_keeps_its_sample_in_its_state_and_reads_its_history_from_there():
    from qbt_vpn_watchdog.checks.return_path import State, pending

    first = _check_run()
    assert isinstance(first.state, State) and first.state.sample.peer_tx == 148
    assert pending(first)  # no resolver to probe, no window yet
    assert "pending" not in first.observations and "at" not in first.observations
    # The next run finds its base in the first result's state: over 20 s the
    # peer's rx grew by nothing but handshake responses while data went out.
    second = _check_run(history=(first,), now=1020.0, rx=184, tx=3_000_000, inner_tx=2_900_000)
    assert not second.ok and second.reason == "handshake_only", second.detail
    assert not pending(second)


# --- the kernel's WireGuard: its link counters count wire bytes, handshakes included ---------


def _kernel(at, rx, rx_packets, tx, probe=True, answered=False):
    # On the kernel the link counts exactly what the peer counters count (measured
    # in tests/vm): the inner_* fields carry wire bytes, rx_packets tells messages apart.
    return Sample(at, KEY, rx, tx, rx, tx, probe, answered, rx_packets, True)


def test_kernel_92_byte_state_is_recognised_on_the_first_sample():
    s = _kernel(100.0, 92, 1, 3_510_000_000)
    v = assess([], s, MIN_TX, WINDOW)
    assert not v.ok and v.reason == "handshake_only"


def test_kernel_handshake_responses_alone_are_no_return_traffic():
    # Data dropped, every 15 s a re-handshake whose 92-byte response gets through:
    # the link's rx grows, but only by whole handshake responses, one message each.
    history = [_kernel(0.0, 92, 1, 20_000), _kernel(8.0, 184, 2, 40_000)]
    v = assess(history, _kernel(16.0, 276, 3, 60_000), MIN_TX, WINDOW)
    assert not v.ok and v.reason == "handshake_only", v


@settings(max_examples=300)
@given(
    st.lists(st.integers(min_value=0, max_value=90), min_size=1, max_size=3),
    st.integers(min_value=0, max_value=3),
)
def test_kernel_any_keepalive_or_data_message_is_return_traffic(paddings, handshakes):
    # Data messages are 32 bytes + payload padded to 16 (a keepalive: 32), so they are
    # never 92 bytes; j of them can average 92 only when j is a multiple of 4 (92 j
    # must be a multiple of 16). With 1 to 3 among the messages, it is always seen.
    received = sum(32 + 16 * p for p in paddings) + HANDSHAKE_RESPONSE_BYTES * handshakes
    base = _kernel(0.0, 92, 1, 10_000)
    now = _kernel(20.0, 92 + received, 1 + len(paddings) + handshakes, 50_000)
    assert assess([base], now, MIN_TX, WINDOW).ok


def test_kernel_counters_from_an_older_result_default_to_the_userspace_meaning():
    # Results kept from before this field existed read as userspace counters.
    s = Sample(0.0, KEY, 1, 2, 3, 4, True, False)
    assert (s.inner_rx_packets, s.link_counts_wire) == (0, False)


def test_a_probe_that_cannot_be_set_up_leaves_the_verdict_to_the_counters():
    """A link-local resolver in resolv.conf ("fe80::1%eth0", a router's RDNSS), a netlink
    error on the route look-up: the probe is left out, and the check never becomes an
    error (unsafe: torrents stopped, the tunnel restarted) over it."""
    from qbt_vpn_watchdog.checks import load_all
    from qbt_vpn_watchdog.sources import LinkState, SourceError, WgDevice, WgPeer
    from tests.support.fakes import FakeDns, FakeLinks, FakeWireguard, context

    class Broken(FakeLinks):
        def __init__(self, links, error):
            super().__init__(links)
            self.error = error

        def route_interface(self, dst):
            raise self.error

    dev = WgDevice(
        "wg0", "uapi", None, (WgPeer(KEY, "192.0.2.1:1637", 995, 5000, 5000, ("0.0.0.0/0",)),)
    )
    wg0 = LinkState("wg0", 7, True, 1420, ("10.64.0.2/32",), 0, 0, 0, 0)
    for error in (
        OSError("illegal IP address string passed to inet_pton"),
        ValueError("'fe80::1%' does not appear to be an IPv4 or IPv6 address"),
        SourceError("route to fe80::1: Invalid argument", kind="unreachable"),
    ):
        ctx = context(
            now=1000.0,
            wireguard=FakeWireguard(dev),
            links=Broken({"wg0": wg0}, error),
            dns=FakeDns(nameserver="fe80::1%eth0"),
        )
        o = load_all()["return_path"].fn(ctx)
        assert o.ok, (error, o.reason, o.detail)


def test_a_zoned_link_local_resolver_is_looked_up_without_its_zone():
    from qbt_vpn_watchdog.sources.links import Links

    links = Links(None)  # the root namespace: a read-only route look-up
    try:
        # Was: OSError from inet_pton ("illegal IP address string").
        assert links.route_interface("fe80::1%lo") == links.route_interface("fe80::1")
    finally:
        links.close()
