from qbt_vpn_watchdog.checks import handshake
from qbt_vpn_watchdog.sources import SourceError, WgDevice, WgPeer
from tests.support.fakes import FakeWireguard, context

NOW = 1_000_000.0


def dev(*peers):
    return WgDevice("wg0", "uapi", 51820, tuple(peers))


def peer(hs, key="k1=", allowed=("0.0.0.0/0",)):
    return WgPeer(key, "198.18.0.1:1637", hs, 92, 1000, allowed)


def run(device=None, error=None):
    return handshake.check(context(now=NOW, wireguard=FakeWireguard(device, error)))


def test_fresh_handshake_passes_and_exports_the_timestamp():
    o = run(dev(peer(NOW - 30)))
    assert o.ok and o.observations["last_handshake_timestamp_seconds"] == NOW - 30
    assert o.observations["age_seconds"] == 30


def test_older_than_reject_after_time_is_stale():
    o = run(dev(peer(NOW - 181)))
    assert not o.ok and o.reason == "stale" and "181 s" in o.detail


def test_exactly_at_the_limit_still_passes():
    assert run(dev(peer(NOW - 180))).ok


def test_never_handshaked():
    o = run(dev(peer(None)))
    assert o.reason == "never" and o.observations["last_handshake_timestamp_seconds"] == 0


def test_missing_interface_and_unreadable_socket_are_distinct():
    assert run(error=SourceError("wg0: no such interface", kind="missing")).reason == "missing"
    assert run(error=SourceError("bad answer", kind="bad_response")).reason == "unreadable"


def test_no_peer():
    assert run(dev()).reason == "no_peer"


def test_the_default_route_peer_is_the_tunnel_peer():
    o = run(dev(peer(NOW - 500, "side=", ("10.9.0.0/24",)), peer(NOW - 5, "main=")))
    assert o.ok and o.facts["public_key"] == "main="


# --- a stepped wall clock (NTP on a board without an RTC) --------------------------------


def _after(first, device, now, mono):
    from qbt_vpn_watchdog.results import CheckResult

    prev = CheckResult.from_outcome("handshake", first, NOW, 0.01)
    ctx = context(now=now, history=(prev,), monotonic=mono, wireguard=FakeWireguard(device))
    return handshake.check(ctx)


def test_a_clock_stepped_forward_does_not_make_a_live_session_stale():
    d = dev(peer(NOW - 30))
    first = handshake.check(context(now=NOW, monotonic=500.0, wireguard=FakeWireguard(d)))
    assert first.ok
    # 20 s later on the monotonic clock; the wall clock was stepped an hour ahead.
    o = _after(first, d, NOW + 3600 + 20, 520.0)
    assert o.ok, o.detail
    assert o.observations["age_seconds"] == 50
    assert "wall clock says 3650 s" in o.detail


def test_a_clock_stepped_back_does_not_hide_a_dead_session():
    d = dev(peer(NOW - 100))
    first = handshake.check(context(now=NOW, monotonic=500.0, wireguard=FakeWireguard(d)))
    assert first.ok
    # 100 s later with no new handshake, and the wall clock stepped back 10 minutes.
    o = _after(first, d, NOW - 600 + 100, 600.0)
    assert (o.ok, o.reason) == (False, "stale") and "200 s ago" in o.detail


def test_a_new_handshake_is_judged_on_the_wall_clock_again():
    first = handshake.check(
        context(now=NOW, monotonic=500.0, wireguard=FakeWireguard(dev(peer(NOW - 30))))
    )
    o = _after(first, dev(peer(NOW + 100)), NOW + 110, 620.0)
    assert o.ok and o.observations["age_seconds"] == 10 and "wall clock" not in o.detail
