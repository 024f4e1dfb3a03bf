"""The one back-off, alone and as tenacity's wait strategy."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from qbt_vpn_watchdog.backoff import Backoff


def test_doubles_from_initial_and_stops_at_maximum():
    b = Backoff(30, 600)
    assert [b.delay(n) for n in range(1, 8)] == [30, 60, 120, 240, 480, 600, 600]
    assert b.delay(0) == 30 and b.delay(10_000) == 600
    assert Backoff(100, 10).delay(3) == 100  # a maximum below initial is initial


@given(
    attempt=st.integers(1, 200),
    initial=st.floats(0.01, 1000),
    maximum=st.floats(0.01, 10_000),
    seed=st.integers(0, 2**32),
)
def test_equal_jitter_stays_between_half_and_all_of_the_ceiling(attempt, initial, maximum, seed):
    b = Backoff(initial, maximum, random.Random(seed))
    c = Backoff(initial, maximum).ceiling(attempt)
    assert c / 2 <= b.delay(attempt) <= c
    assert b.delay(attempt) >= initial / 2


def test_tenacity_waits_what_it_says():
    slept = []
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionError("refused")
        return "ok"

    r = Retrying(
        wait=Backoff(0.5, 1.5),
        stop=stop_after_attempt(5),
        retry=retry_if_exception_type(ConnectionError),
        sleep=slept.append,
        reraise=True,
    )
    assert r(flaky) == "ok"
    assert slept == [0.5, 1.0, 1.5]


def test_refuses_a_non_positive_initial():
    with pytest.raises(ValueError):
        Backoff(0, 10)
