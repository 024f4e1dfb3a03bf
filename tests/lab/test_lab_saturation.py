"""DNS behind a saturated tunnel: late answers are `slow`, never `no_answer` or `timeout`.

Three bulk downloads through the lab's tunnel for several minutes (as in the
report that found it: 18 of 179 samples said `no_answer` while DNS was only
late), the real daemon at the lab's 2 s interval, in observe mode. Every cycle
is recorded from its /metrics. The numbers depend on the machine: on a shared
2-core box the rate and the latencies are noisy; what must hold anyway is
that no cycle calls DNS dead, and that remediation never acts.

QBTVPN_SATURATION_SECONDS shortens or lengthens the load (default 180).
"""

from __future__ import annotations

import os
import time

import pytest

from tests.lab.test_remediation_lab import Watchdog, free_port, lab_watchdog_config
from tests.support.lab_load import CycleRecorder, Saturation
from tests.support.procs import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.root]

SECONDS = float(os.environ.get("QBTVPN_SATURATION_SECONDS", "180"))
MIN_RATE = 2.0  # MB/s: below this the tunnel was not loaded and the test proved nothing


def test_dns_behind_a_saturated_tunnel_is_never_dead(healed_lab, tmp_path):
    port = free_port()
    cfg = lab_watchdog_config(healed_lab.config_path, tmp_path / "watchdog.toml", port)
    cfg.write_text(cfg.read_text().replace('mode = "enforce"', 'mode = "observe"'))
    w = Watchdog(cfg, port, tmp_path / "watchdog.log").start()
    rec = CycleRecorder(port).start()
    try:
        wait_for("two cycles", lambda: rec.record.cycles >= 2, 30)
        rec.phase = "saturated"
        with Saturation(3) as load:
            time.sleep(SECONDS)
            rate = load.mb_per_s()
        rec.phase = "after"
        time.sleep(5)
    finally:
        record = rec.stop()
        w.stop()
    sat = record.by_phase.get("saturated", {})
    cycles = record.phase_cycles["saturated"]
    non_ok = {k: v for k, v in sorted(sat.items()) if k[1] != "ok"}
    print(
        f"\nsaturated {SECONDS:.0f} s at {rate:.1f} MB/s: {cycles} cycles; "
        f"non-ok (check, reason): cycles = {non_ok or 'none'}; "
        f"remediations: {record.last_remediations or 'none'}"
    )
    assert rate >= MIN_RATE, f"the tunnel carried only {rate:.1f} MB/s: not saturated"
    assert cycles >= SECONDS / 2 / 2, f"only {cycles} cycles in {SECONDS:.0f} s"
    dead = {k: v for k, v in sat.items() if k[0] == "dns" and k[1] in ("no_answer", "timeout")}
    assert dead == {}, f"DNS called dead behind a busy tunnel: {dead}"
    assert sat.get(("dns", "ok"), 0) + sat.get(("dns", "slow"), 0) == cycles
    # Nothing the policy acts on: the tunnel works, it is only busy.
    unsafe = {k: v for k, v in non_ok.items() if k[0] in ("return_path", "handshake", "bind")}
    assert unsafe == {}, f"a busy tunnel reported as broken: {unsafe}"
