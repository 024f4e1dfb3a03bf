"""The path-MTU probe: the search (pure), the ICMP it writes and reads, and a real echo.

The lab test (tests/lab/test_lab_faults.py, faults mtu, mtu-down, mtu-up) runs it
through a real black hole; here: that the search finds the exact size, that
a lost probe only ever makes the answer smaller, and that a real echo on
loopback is measured as full size.
"""

from __future__ import annotations

import os
import random
import socket
import struct

import pytest

from qbt_vpn_watchdog.sources import PathMtu
from qbt_vpn_watchdog.sources.pmtu import (
    ICMP_ECHO,
    MIN_SIZE,
    SMALL,
    PathMtuProbe,
    echo_request,
    narrow,
    parse_reply,
)


def black_hole(limit: int, lose: float = 0.0, rng: random.Random | None = None):
    """send_round for a path that carries sizes <= limit, losing a share of them."""
    rounds: list[list[int]] = []

    def send(sizes: list[int]) -> set[int]:
        rounds.append(sizes)
        return {s for s in sizes if s <= limit and not (rng and rng.random() < lose)}

    return send, rounds


@pytest.mark.parametrize("limit", [SMALL, SMALL + 1, 576, 1136, 1137, 1280, 1319])
def test_narrow_finds_the_exact_size_in_three_rounds(limit):
    send, rounds = black_hole(limit)
    assert narrow(send, SMALL, 1320) == limit
    assert len(rounds) <= 3
    assert all(len(r) <= 12 for r in rounds)


def test_narrow_never_reports_more_than_passes_when_probes_are_lost():
    rng = random.Random(7)
    for _ in range(500):
        limit = rng.randrange(SMALL, 1320)
        send, _ = black_hole(limit, lose=0.3, rng=rng)
        got = narrow(send, SMALL, 1320)
        assert SMALL <= got <= limit


def test_narrow_with_nothing_above_the_small_size():
    send, _ = black_hole(SMALL)
    assert narrow(send, SMALL, SMALL + 1) == SMALL


def _checksum_ok(data: bytes) -> bool:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s >> 16) + (s & 0xFFFF)
    return s == 0xFFFF


@pytest.mark.parametrize("size", [MIN_SIZE, SMALL, 1137, 1320])
def test_echo_request_is_as_large_as_asked_with_a_valid_checksum(size):
    icmp = echo_request(0x1234, 7, size)
    assert len(icmp) + 20 == size
    assert icmp[0] == ICMP_ECHO
    assert _checksum_ok(icmp)


def test_parse_reply_reads_source_ident_seq_and_size():
    icmp = bytearray(echo_request(0xBEEF, 9, 100))
    icmp[0] = 0  # echo reply
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 100, 1, 0, 64, 1, 0,
                     socket.inet_aton("10.128.0.1"), socket.inet_aton("10.128.0.42"))  # fmt: skip
    assert parse_reply(ip + bytes(icmp)) == ("10.128.0.1", 0xBEEF, 9, 100)
    assert parse_reply(ip + echo_request(1, 1, 100)) is None  # a request, not a reply
    assert parse_reply(b"\x45" + bytes(10)) is None  # junk


def test_direction_from_the_fragmented_echo():
    base = dict(target="10.128.0.1", tunnel_mtu=1320, answered=True, full_size=False,
                largest=1136, rtt=0.001, probes=34)  # fmt: skip
    assert PathMtu(down_full_size=False, **base).direction == "down"
    assert PathMtu(down_full_size=True, **base).direction == "up"
    assert PathMtu(down_full_size=None, **base).direction == ""
    healthy = {**base, "full_size": True, "largest": 1320}
    assert PathMtu(down_full_size=None, **healthy).direction == ""


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="a raw ICMP socket needs root")
def test_a_real_echo_on_loopback_is_full_size():
    # Loopback only (the root namespace's own 127.0.0.1): nothing leaves the machine.
    m = PathMtuProbe(None).measure("127.0.0.1", 1320)
    assert (m.answered, m.full_size, m.largest, m.direction) == (True, True, 1320, "")
    assert m.probes == 2 and m.rtt is not None and m.rtt < 1.0


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="a raw ICMP socket needs root")
def test_a_silent_target_is_unanswered_not_a_black_hole():
    # 127.0.0.2 is on loopback too; the probe's socket is closed to replies
    # from it by dropping them with an nftables table of our own in a
    # namespace this test creates (and always deletes).
    import subprocess
    import uuid

    ns = f"qvt-pmtu-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", "-"], check=True, text=True,
            input="table ip qvt {\n chain input {\n  type filter hook input priority 0;\n"
            "  icmp type echo-request drop\n }\n}\n",
        )  # fmt: skip
        m = PathMtuProbe(ns).measure("127.0.0.1", 1320)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert (m.answered, m.full_size, m.largest, m.direction) == (False, False, None, "")
