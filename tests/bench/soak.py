"""The soak: the daemon at its default interval (10 s, enforce mode) for 10 minutes
against the lab, the tunnel alternately saturated (3 bulk downloads) and idle.

Nothing is broken, so every non-ok cycle is a false alarm (``slow`` DNS
excepted: a busy tunnel answers late, and ``slow`` never acts or pages).
Printed: cycles per phase and the tunnel's rate, non-ok cycles per check and
reason, the remediation actions taken (target 0), and the alerts the shipped
rules would have raised: a real Prometheus scrapes the daemon every 15 s and
evaluates them, and its ALERTS series over the soak say which went pending
and which fired.

On the shared 2-core machine the rate under load, and so how late DNS gets,
depend on what else runs: the counts are what they were on that run.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from tests.bench.common import free_port
from tests.support.lab_load import CycleRecorder, Saturation
from tests.support.procs import Proc, wait_for

RULES = Path(__file__).resolve().parents[2] / "alerts" / "qbt-vpn-watchdog.rules.yml"
JOB = "qbt-vpn-watchdog"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


def soak_config(base: Path, out: Path, port: int) -> Path:
    """The lab's config at the default interval, enforce mode, our metrics port."""
    text = base.read_text()
    text = re.sub(r"(?m)^listen_port = \d+$", f"listen_port = {port}", text)
    text = re.sub(r"(?m)^interval = [\d.]+$", "interval = 10.0", text, count=1)
    text = re.sub(r'(?m)^mode = "\w+"$', 'mode = "enforce"', text)
    out.write_text(text)
    return out


class Prometheus:
    """prometheus (Debian's) on loopback with the shipped rules, scraping one target."""

    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = tmp / "prometheus.yml"
        cfg.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }))  # fmt: skip
        self.proc = Proc(
            [shutil.which("prometheus") or "prometheus", f"--config.file={cfg}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn"],
            tmp / "prometheus.log",
        )  # fmt: skip
        wait_for("prometheus", self._ready, 30)

    def _ready(self) -> bool:
        try:
            with _OPENER.open(f"{self.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict]:
        q = urllib.parse.urlencode({"query": expr})
        with _OPENER.open(f"{self.url}/api/v1/query?{q}", timeout=10) as r:
            return json.loads(r.read())["data"]["result"]

    def alerts_over(self, seconds: float, state: str) -> list[str]:
        window = f"{int(seconds) + 30}s"
        rows = self.query(f'max_over_time(ALERTS{{alertstate="{state}"}}[{window}])')
        return sorted(
            f"{r['metric']['alertname']}"
            + (f"({r['metric']['check']})" if "check" in r["metric"] else "")
            for r in rows
        )

    def stop(self) -> None:
        self.proc.stop()


def soak(base: Path, tmp: Path, seconds: float, phase: float, row) -> None:
    """Run the soak and add its rows (``row(what, value, target, verdict)``)."""
    from tests.support.daemon_proc import WatchdogProc

    port = free_port()
    cfg = soak_config(base, tmp / "wd-soak.toml", port)
    d = WatchdogProc(cfg, port, tmp / "wd-soak.log").started()
    prom = rec = None
    rates: list[float] = []
    try:
        prom = Prometheus(tmp, f"127.0.0.1:{port}")
        rec = CycleRecorder(port).start()
        t_end = time.monotonic() + seconds
        saturated = True
        while (left := t_end - time.monotonic()) > 0:
            rec.phase = "saturated" if saturated else "idle"
            print(f"  {rec.phase} for {min(phase, left):.0f} s ...", flush=True)
            if saturated:
                with Saturation(3) as load:
                    time.sleep(min(phase, left))
                    rates.append(load.mb_per_s())
            else:
                time.sleep(min(phase, left))
            saturated = not saturated
        time.sleep(16)  # one more scrape and evaluation of the last cycles
        record = rec.stop()
        rec = None
        fired = prom.alerts_over(seconds, "firing")
        pending = prom.alerts_over(seconds, "pending")
    finally:
        if rec is not None:
            rec.stop()
        if prom is not None:
            prom.stop()
        d.stop()

    cyc = record.phase_cycles
    row(f"soak: {seconds / 60:.0f} min at the default 10 s interval, {phase:.0f} s phases",
        f"{cyc['saturated']} cycles saturated (mean {sum(rates) / max(1, len(rates)):.1f} MB/s "
        f"through the tunnel), {cyc['idle']} idle")  # fmt: skip
    for ph in ("saturated", "idle"):
        bad = {k: v for k, v in sorted(record.by_phase.get(ph, {}).items()) if k[1] != "ok"}
        text = ", ".join(f"{c} {r} x{n}" for (c, r), n in bad.items()) or "none"
        alarms = sum(n for (c, r), n in bad.items() if not (c == "dns" and r == "slow"))
        row(f"soak: non-ok cycles while {ph}", text, "0 other than dns slow",
            "met" if alarms == 0 else f"MISSED ({alarms})")  # fmt: skip
    acts = {a: int(n) for a, n in record.last_remediations.items() if n}
    row("soak: remediation actions", ", ".join(f"{a} x{n}" for a, n in acts.items()) or "none",
        "0", "met" if not acts else "MISSED")  # fmt: skip
    row("soak: alerts fired (shipped rules, 15 s scrape)", ", ".join(fired) or "none", "none",
        "met" if not fired else "MISSED")  # fmt: skip
    row("soak: alerts pending at some point (would fire with a shorter for:)",
        ", ".join(pending) or "none")  # fmt: skip
