"""/healthz's liveness answer and the status line (health.py)."""

from __future__ import annotations

from qbt_vpn_watchdog.config import Config
from qbt_vpn_watchdog.health import health, stall_limit
from qbt_vpn_watchdog.results import RemediationView, Snapshot


def snapshot(last_cycle: float) -> Snapshot:
    return Snapshot(
        results={}, readings={}, remediation=RemediationView(), last_cycle=last_cycle,
        cycles=1, reload_failures=0, checks=(), reasons={},
    )  # fmt: skip


def test_a_cycle_whose_action_is_still_within_its_timeout_is_not_stalled():
    # A cycle may run every check into its timeout and then one remediation action
    # into its own: systemd allows that (the NixOS module's WatchdogSec=), so
    # /healthz must not call it stalled either.
    cfg = Config()
    names = cfg.enabled_checks()
    busy = (
        3 * cfg.watchdog.interval
        + max(cfg.check(n).timeout for n in names)
        + cfg.remediation.action_timeout / 2
    )
    code, text = health(snapshot(1000.0), cfg, names, 1000.0 + busy, "ok")
    assert code == 200, text


def test_stalled_past_the_limit_and_the_limit_is_in_the_text():
    cfg = Config()
    names = cfg.enabled_checks()
    limit = stall_limit(cfg, names)
    assert health(snapshot(1000.0), cfg, names, 1000.0 + limit - 1, "ok")[0] == 200
    code, text = health(snapshot(1000.0), cfg, names, 1000.0 + limit + 1, "ok")
    assert code == 503 and text.startswith("stalled") and f"limit {limit:.0f} s" in text
    assert health(None, cfg, names, 0.0, "")[0] == 503
