"""/readyz: 503 while a check is unsafe or torrents are held (observe mode too), else 200."""

from __future__ import annotations

import dataclasses

from qbt_vpn_watchdog.readiness import readiness
from qbt_vpn_watchdog.results import RemediationView
from tests.core.test_metrics_collector import full_snapshot, result

ALIVE = (200, "alive; ok: 6/6 checks passed")


def safe_snapshot(**changes):
    snap = full_snapshot(**changes)
    results = {n: result(n) for n in snap.checks}
    return dataclasses.replace(snap, results=results, remediation=RemediationView("ok"))


def test_ready_when_alive_safe_and_nothing_held():
    assert readiness(ALIVE, safe_snapshot()) == (200, "ready; ok: 6/6 checks passed")


def test_not_ready_while_the_loop_is_starting_or_stalled():
    assert readiness((503, "starting: no cycle finished yet"), None) == (
        503, "not ready: starting: no cycle finished yet",
    )  # fmt: skip
    assert readiness((503, "stalled: ..."), safe_snapshot())[0] == 503


def test_one_unsafe_result_is_enough_and_named():
    snap = safe_snapshot()
    bad = dict(snap.results, return_path=result("return_path", False, "handshake_only"))
    code, text = readiness(ALIVE, dataclasses.replace(snap, results=bad))
    assert (code, text) == (503, "not ready: unsafe: return_path handshake_only")


def test_degraded_and_unknown_results_leave_it_ready():
    snap = safe_snapshot()
    results = dict(
        snap.results,
        exit_ip=result("exit_ip", False, "unreachable"),  # degraded: the endpoint is down
        webui=result("webui", False, "unreachable"),
    )
    assert readiness(ALIVE, dataclasses.replace(snap, results=results))[0] == 200


def test_held_torrents_in_enforce_and_would_be_held_in_observe_mode():
    held = RemediationView("holding", held_stopped=3)
    code, text = readiness(ALIVE, dataclasses.replace(safe_snapshot(), remediation=held))
    assert (code, text) == (503, "not ready: remediation holding, 3 torrents held")
    observe = RemediationView("holding", observe_only=True)
    code, text = readiness(ALIVE, dataclasses.replace(safe_snapshot(), remediation=observe))
    assert (code, text) == (503, "not ready: would be remediation holding")
