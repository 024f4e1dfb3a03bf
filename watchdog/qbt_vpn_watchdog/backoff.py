"""The one back-off: exponential from ``initial``, capped at ``maximum``, with optional jitter.

Used for every wait that grows with failures: tunnel restarts across cycles
(policy.py), qBittorrent logins after a refusal (sources/qbittorrent.py), and
as tenacity's wait strategy where tenacity retries a call (a qBittorrent
request, the restart command). It is a tenacity ``wait_base``, so tenacity
hands it its own retry state; the policy, which counts restarts across cycles
itself, asks ``delay(attempt)`` directly.
"""

from __future__ import annotations

import random

from tenacity import RetryCallState
from tenacity.wait import wait_base


class Backoff(wait_base):
    """``min(initial * 2^(attempt-1), maximum)``; with ``rng``, "equal jitter" below that.

    Equal jitter picks uniformly between half of the ceiling and all of it, so
    uncoordinated retries spread out but never come faster than initial / 2.
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        if initial <= 0:
            raise ValueError(f"initial must be > 0, got {initial!r}")
        self.initial = float(initial)
        self.maximum = max(float(maximum), self.initial)
        self.rng = rng

    def ceiling(self, attempt: int) -> float:
        """The wait after failure number ``attempt`` (1-based), before jitter."""
        n = max(1, attempt)
        # 2 ** 1074 would overflow a float long before it matters: cap the exponent.
        if n > 64:
            return self.maximum
        return min(self.initial * 2.0 ** (n - 1), self.maximum)

    def delay(self, attempt: int) -> float:
        c = self.ceiling(attempt)
        return c if self.rng is None else self.rng.uniform(c / 2, c)

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.delay(retry_state.attempt_number)
