"""The daemon against the lab: how many poll cycles until each fault is reported.

The daemon runs in observe mode here (it reports what it would do, touches
nothing), so each fault is measured on its own; remediation against the lab is
what `lab demo` shows. Prints a table of cycles per fault (run with -s).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qbt_vpn_watchdog.lab import procs
from qbt_vpn_watchdog.lab import topology as t
from qbt_vpn_watchdog.lab.state import LOG_DIR, STATE_DIR

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.qbittorrent]

PORT = t.METRICS_PORT + 1
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only

# fault -> {check that must report it: the most poll cycles allowed}.
# The bound is what the design promises: a failure shows on the next cycle that
# runs the check (exit_ip runs every 5 s = every 3rd cycle in the lab, webui
# every 4 s = every 2nd). The
# return path under a blackhole has no handshake-only signature, so it needs
# its evidence window (15 s, ~8 cycles of 2 s) with probes unanswered.
DETECT = {
    "return-path": {"return_path": 4, "dns": 2},
    "blackhole": {"dns": 2, "return_path": 12},
    "dns": {"dns": 2},
    "dns-leak": {"dns": 2},
    "exit-ip": {"exit_ip": 4},
    "bind": {"bind": 2},
    "tunnel-down": {"handshake": 2, "return_path": 2},
    "webui-exposed": {"webui": 3},
    "ipv6": {"ipv6": 2},  # route_contained: reported (degraded), not acted on
    "qbt-down": {"bind": 2, "webui": 3},
}
# The guards (#20), measured by their own test below: the kill switch every
# cycle; the forwarded port every 4 s in the lab (every 2nd cycle), like webui.
GUARDS = {
    "killswitch": {"killswitch": 2},
    "killswitch-open": {"killswitch": 2},
    "ipv6-open": {"ipv6": 2, "killswitch": 2},
    "port-closed": {"port_forward": 3},
    "port-moved": {"port_forward": 3},
}


def scrape() -> dict[tuple[str, tuple], float]:
    with _OPENER.open(f"http://127.0.0.1:{PORT}/metrics", timeout=3) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict, name: str, **labels) -> float | None:
    return m.get((name, tuple(sorted(labels.items()))))


def wait_metrics(cond, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    m: dict = {}
    while time.monotonic() < deadline:
        try:
            m = scrape()
        except (OSError, urllib.error.URLError):
            m = {}
        if m and cond(m):
            return m
        time.sleep(0.25)
    failing = {
        dict(k[1]).get("check"): _reason(m, dict(k[1]).get("check"))
        for k, v in m.items()
        if k[0] == "qbtvpn_check_success" and v == 0.0
    }
    raise AssertionError(f"metrics condition not met within {timeout:g} s; failing: {failing}")


@pytest.fixture(scope="module")
def daemon(lab):
    base = lab.config_path.read_text()
    text = base.replace('mode = "enforce"', 'mode = "observe"').replace(
        f"listen_port = {t.METRICS_PORT}", f"listen_port = {PORT}"
    )
    cfg = STATE_DIR / "watchdog-observe.toml"
    cfg.write_text(text)
    log = open(LOG_DIR / "daemon-observe.log", "ab")  # noqa: SIM115 - handed to the child
    p = subprocess.Popen(
        [sys.executable, "-m", "qbt_vpn_watchdog", "run", "--config", str(cfg)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    procs.pid_file("daemon-observe").write_text(f"{p.pid}\n")
    try:
        wait_metrics(lambda m: value(m, "qbtvpn_healthy") == 1.0, 60)
        yield p
    finally:
        procs.stop("daemon-observe", "python", timeout=10)
        p.wait(timeout=5)
        log.close()


def _reason(m: dict, check: str) -> str:
    for (name, labels), v in m.items():
        d = dict(labels)
        if name == "qbtvpn_check_reason" and d.get("check") == check and v == 1.0:
            return d["reason"]
    return "?"


def test_cycles_until_each_fault_is_reported(healed_lab, daemon):
    measure(healed_lab, DETECT)


def test_cycles_until_each_guard_fault_is_reported(healed_lab, daemon):
    measure(healed_lab, GUARDS)


def measure(lab, detect: dict[str, dict[str, int]]) -> None:
    """Each fault in turn: the poll cycles until each of its checks fails, within the bound."""
    table = []  # (fault, check, reason, cycles, seconds)
    for fault, checks in detect.items():
        m = wait_metrics(lambda m: value(m, "qbtvpn_healthy") == 1.0, 60)
        c0 = value(m, "qbtvpn_cycles_total")
        t0 = time.monotonic()
        lab.break_(fault)
        seen: dict[str, tuple] = {}
        while len(seen) < len(checks) and time.monotonic() - t0 < 60:
            try:
                m = scrape()
            except OSError:
                continue
            for check in checks:
                if check not in seen and value(m, "qbtvpn_check_success", check=check) == 0.0:
                    cycles = int(value(m, "qbtvpn_cycles_total") - c0)
                    seen[check] = (_reason(m, check), cycles, time.monotonic() - t0)
            time.sleep(0.25)
        for check in checks:
            table.append((fault, check, *seen.get(check, ("not reported", 999, 60.0))))
        lab.heal(fault)
    wait_metrics(lambda m: value(m, "qbtvpn_healthy") == 1.0, 60)
    print("\nfault           check        reason             cycles  seconds")
    for fault, check, reason, cycles, took in table:
        print(f"{fault:<15} {check:<12} {reason:<18} {cycles:>6}  {took:7.1f}")
    slow = [(f, c, n) for f, c, _, n, _ in table if n > detect[f][c]]
    assert slow == [], f"reported later than promised (fault, check, cycles): {slow}"


def test_tunnel_down_is_reported_at_once_whatever_the_interval(healed_lab):
    # A 30 s poll interval: the next regular cycle is far away, so only the
    # link event (RTM_DELLINK in the namespace) can explain a quick report.
    # The seconds are printed; the assertion is only "well before the next cycle".
    lab = healed_lab
    port = PORT + 1
    text = lab.config_path.read_text()
    text = text.replace('mode = "enforce"', 'mode = "observe"').replace(
        "interval = 2.0", "interval = 30.0"
    )
    text = text.replace(f"listen_port = {t.METRICS_PORT}", f"listen_port = {port}")
    assert "interval = 30.0" in text
    cfg = STATE_DIR / "watchdog-slow.toml"
    cfg.write_text(text)
    p = subprocess.Popen(
        [sys.executable, "-m", "qbt_vpn_watchdog", "run", "--config", str(cfg)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    procs.pid_file("daemon-slow").write_text(f"{p.pid}\n")

    def get() -> dict:
        with _OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            out = {}
            for fam in text_string_to_metric_families(r.read().decode()):
                for s in fam.samples:
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
            return out

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                m = get()
                if value(m, "qbtvpn_healthy") == 1.0:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the slow daemon never got healthy"
            time.sleep(0.25)
        cycles = value(m, "qbtvpn_cycles_total")
        t0 = time.monotonic()
        lab.break_("tunnel-down")
        while True:
            m = get()
            if value(m, "qbtvpn_check_success", check="return_path") == 0.0:
                break
            assert time.monotonic() - t0 < 10, "not reported within 10 s (interval 30 s)"
            time.sleep(0.05)
        took = time.monotonic() - t0
        assert _reason(m, "return_path") == "no_tunnel"
        assert value(m, "qbtvpn_cycles_total") == cycles + 1  # one event cycle, no regular one
        print(f"\ntunnel-down reported {took:.2f} s after the fault (poll interval 30 s)")
    finally:
        procs.stop("daemon-slow", "python", timeout=10)
        p.wait(timeout=5)
