"""The runner: the due checks of a cycle, concurrently, each within its own timeout."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import replace
from functools import partial

from qbt_vpn_watchdog.checks.context import Context
from qbt_vpn_watchdog.checks.registry import CheckSpec
from qbt_vpn_watchdog.results import (
    COMMON_REASONS,
    ERROR,
    LOCAL_RESOURCE,
    TIMEOUT,
    CheckResult,
    Outcome,
)
from qbt_vpn_watchdog.sources import local_resource
from qbt_vpn_watchdog.workers import Busy, Workers

log = logging.getLogger("qbt_vpn_watchdog.checks")


class Runner:
    """Runs the due checks of a cycle concurrently, each within its own timeout.

    A check that overruns its timeout gets a ``timeout`` result; its thread is
    left to finish on its own (Python threads cannot be killed) and the check
    is not started again until it has, so a hung probe never piles up threads
    (``workers.Workers``, which runs remediation's actions too).
    """

    def __init__(
        self, specs: Mapping[str, CheckSpec], clock: Callable[[], float] = time.time
    ) -> None:
        self.specs = dict(specs)
        self.clock = clock
        self._workers = Workers("check")

    def run_cycle(
        self,
        ctx: Context,
        timeouts: Mapping[str, float],
        histories: Mapping[str, Sequence[CheckResult]],
    ) -> dict[str, CheckResult]:
        started = self.clock()
        futures: dict[str, tuple[Future, float, float]] = {}
        results: dict[str, CheckResult] = {}
        for name, timeout in timeouts.items():
            spec = self.specs[name]
            t0 = time.monotonic()
            sub = ctx.for_check(histories.get(name, ()))
            try:
                fut = self._workers.start(name, partial(_run_one, spec, sub))
            except RuntimeError as e:  # "can't start new thread": TasksMax= or the host's limit
                ran_out = local_resource(e)
                if ran_out is None:
                    raise
                detail = f"local resource limit: {ran_out}; not a tunnel fault: not started"
                out = Outcome.failed(LOCAL_RESOURCE, detail)
                results[name] = CheckResult.from_outcome(name, out, started, 0.0)
                continue
            except Busy:
                results[name] = CheckResult(
                    name,
                    False,
                    TIMEOUT,
                    "still running from an earlier cycle (hung?)",
                    {},
                    {},
                    started,
                    0.0,
                )
                continue
            futures[name] = (fut, t0, timeout)
        for name, (fut, t0, timeout) in futures.items():
            remaining = max(0.0, t0 + timeout - time.monotonic())
            try:
                outcome: Outcome = fut.result(timeout=remaining)
            except TimeoutError:
                outcome = Outcome.failed(TIMEOUT, f"no answer within {timeout:g} s")
                duration = timeout
            else:
                duration = time.monotonic() - t0
            results[name] = CheckResult.from_outcome(name, outcome, started, duration)
        return {n: results[n] for n in timeouts if n in results}


def _run_one(spec: CheckSpec, ctx: Context) -> Outcome:
    try:
        outcome = spec.fn(ctx)
        if not isinstance(outcome, Outcome):
            raise TypeError(f"check returned {type(outcome).__name__}, not Outcome")
        if (
            not outcome.ok
            and outcome.reason not in spec.reason_names
            and outcome.reason not in COMMON_REASONS
        ):
            raise ValueError(f"reason {outcome.reason!r} is not one of {spec.reason_names}")
    # BaseException too: the worker hands anything raised to the loop's thread,
    # and a check that calls sys.exit() must not end the watchdog.
    except BaseException as e:  # noqa: BLE001 - the runner's job is to keep going
        log.debug("check %s raised", spec.name, exc_info=True)
        outcome = Outcome.failed(ERROR, f"{type(e).__name__}: {e}")
        ctx.local_resource = ctx.local_resource or local_resource(e)
    return _local_resource(outcome, ctx.local_resource)


def _local_resource(outcome: Outcome, ran_out: str | None) -> Outcome:
    """A failure of a check that ran out of a local resource while reading: ``local_resource``.

    The check's own reason (``unreadable``, ``missing``, ``error``...) would
    blame the tunnel for what is the watchdog's own limit (a flood of
    connections to the metrics port took every file descriptor): the check
    could not look, which is unknown, never unsafe. What it did see is kept.
    """
    if ran_out is None or outcome.ok:
        return outcome
    if "local resource limit" in outcome.detail:
        detail = f"{outcome.detail}; not a tunnel fault: the check could not look"
    else:
        detail = (
            f"local resource limit: {ran_out}; not a tunnel fault: the check could not look"
            f" (it said {outcome.reason}: {outcome.detail})"
        )
    return replace(outcome, reason=LOCAL_RESOURCE, detail=detail)
