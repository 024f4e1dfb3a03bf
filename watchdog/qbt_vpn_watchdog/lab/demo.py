"""`qbt-vpn-watchdog lab demo`: watch the watchdog catch the 92-byte failure, end to end.

Lab up -> a torrent seeding in the confined qBittorrent -> the daemon against
the lab -> break `return-path` -> the watchdog reports it (and stops torrents,
restarts the tunnel); "caught" is said only for the fault's own signature
(return_path: handshake_only), and the first failure of any check is shown
beside it -> heal -> recovery -> everything torn down, also on
Ctrl-C or an error.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from qbt_vpn_watchdog.lab import control, faults, procs, services
from qbt_vpn_watchdog.lab import topology as t
from qbt_vpn_watchdog.lab.state import LOG_DIR, PID_DIR
from qbt_vpn_watchdog.results import OK

METRICS = f"http://127.0.0.1:{t.METRICS_PORT}"
# Loopback only, and never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(path: str) -> tuple[int, str]:
    try:
        with _OPENER.open(METRICS + path, timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def health() -> str:
    code, text = _get("/healthz")
    return text.strip() if code else f"(no answer: {text})"


def metric_lines(prefixes: tuple[str, ...]) -> list[str]:
    code, text = _get("/metrics")
    if code != 200:
        return []
    return [ln for ln in text.splitlines() if ln.startswith(prefixes) and not ln.endswith(" 0.0")]


def failing_checks(text: str) -> dict[str, str]:
    """check -> reason for every failing check in an exposition (qbtvpn_check_reason == 1)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name != "qbtvpn_check_reason":
            continue
        for s in fam.samples:
            if s.value == 1 and s.labels.get("reason") != OK:
                out[s.labels["check"]] = s.labels["reason"]
    return out


@dataclass
class Detection:
    """When anything first failed, and when the fault's own signature was seen.

    Breaking the return path re-creates the tunnel, so the link checks may fire
    at once (return_path: no_tunnel) while the 92-byte signature needs its
    evidence window: the demo says "caught" only for the signature and shows
    both times.
    """

    signature: tuple[str, tuple[str, ...]] | None
    first: tuple[float, dict[str, str]] | None = None
    caught: tuple[float, str] | None = None

    def see(self, seconds: float, failing: dict[str, str]) -> bool:
        """Record one look at the failing checks; True once the signature was seen."""
        if failing and self.first is None:
            self.first = (seconds, dict(failing))
        if self.caught is None:
            if self.signature is None:
                if failing:
                    check, reason = next(iter(failing.items()))
                    self.caught = (seconds, f"{check} ({reason})")
            else:
                check, reasons = self.signature
                if failing.get(check) in reasons:
                    self.caught = (seconds, f"{check} ({failing[check]})")
        return self.caught is not None

    def report(self) -> list[str]:
        lines = []
        if self.first is not None:
            seconds, failing = self.first
            what = ", ".join(f"{c} ({r})" for c, r in failing.items())
            lines.append(f"first failure seen after {seconds:.1f} s: {what}")
        if self.caught is not None:
            seconds, what = self.caught
            lines.append(f"caught after {seconds:.1f} s: {what}, the fault's own signature")
        elif self.signature is not None:
            check, reasons = self.signature
            lines.append(f"NOT caught: {check} never reported {' or '.join(reasons)}")
        return lines


def watch_fault(fault: faults.Fault, timeout: float) -> Detection:
    """Print /healthz as it changes until the fault's signature is in /metrics."""
    d = Detection(fault.signature)
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout:
        h = health()
        if h != last:
            say(f"  [{time.monotonic() - t0:5.1f} s] {h}")
            last = h
        code, text = _get("/metrics")
        if code == 200 and d.see(time.monotonic() - t0, failing_checks(text)):
            break
        time.sleep(0.25)
    return d


def torrent_states() -> str:
    try:
        return ", ".join(f"{x.name}: {x.state}" for x in services.qbt_client().torrents_info())
    except Exception as e:  # noqa: BLE001 - the demo only reports it
        return f"(qBittorrent: {type(e).__name__})"


def say(msg: str = "") -> None:
    print(msg, flush=True)


def watch(
    what: str, cond: Callable[[str], bool], timeout: float, quiet: bool = False
) -> float | None:
    """Print /healthz whenever it changes until cond(health) holds; seconds taken or None."""
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout:
        h = health()
        if h != last:
            say(f"  [{time.monotonic() - t0:5.1f} s] {h}")
            last = h
        if cond(h):
            return time.monotonic() - t0
        time.sleep(0.5)
    if not quiet:
        say(f"  {what}: not within {timeout:g} s")
    return None


def start_daemon(config: str) -> int:
    PID_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / "daemon.log", "ab")  # noqa: SIM115 - handed to the child
    p = subprocess.Popen(
        [sys.executable, "-m", "qbt_vpn_watchdog", "run", "--config", config],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    procs.pid_file("daemon").write_text(f"{p.pid}\n")
    return p.pid


def demo() -> int:
    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    t_start = time.monotonic()
    try:
        if control.stale():
            control.down()
        say("1. Bringing the lab up (namespaces, AirVPN-like server, confined qBittorrent) ...")
        t0 = time.monotonic()
        config = str(control.up())
        say(f"   up in {time.monotonic() - t0:.1f} s; watchdog config: {config}")
        say(f"   WebUI (LAN side): http://{t.LAN_NS_IP}:{t.WEBUI_PORT}  user {services.USERNAME}, "
            f"password in {services.PASSWORD_FILE}")  # fmt: skip

        c = services.qbt_client()
        c.torrents_add(
            torrent_files=str(services.TORRENT_FILE), save_path=str(services.CLIENT_DOWNLOADS)
        )
        say("   added the test torrent; downloading it through the tunnel ...")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not procs.running("client-qbt", "qbittorrent-nox"):
                raise t.LabError(f"qbittorrent-nox exited (log: {LOG_DIR}/client-qbt.log)")
            ts = c.torrents_info()
            if ts and ts[0].progress >= 1:
                break
            time.sleep(0.3)
        say(f"   {torrent_states()}")

        say(f"\n2. Starting the watchdog: {sys.executable} -m qbt_vpn_watchdog run --config {config}")
        start_daemon(config)
        say(
            f"   metrics: {METRICS}/metrics   health: {METRICS}/healthz   log: {LOG_DIR}/daemon.log"
        )
        if watch("all checks passing", lambda h: "ok:" in h and "passed" in h, 60) is None:
            return 1
        for ln in metric_lines(("qbtvpn_healthy", "qbtvpn_wireguard_peer_receive_bytes_total")):
            say(f"   {ln}")
        say(
            f"   the forwarded port, {t.EXIT_IP}:{t.FORWARDED_PORT}, answers from the lab's "
            f"internet ({t.NS_INET}) as a peer would reach it (port_forward):"
        )
        for ln in metric_lines(
            ('qbtvpn_check_reason{check="port_forward"', "qbtvpn_port_forward_connect_seconds")
        ):
            say(f"   {ln}")

        say(
            "\n3. Breaking the return path: only the first handshake response gets back"
            " (the 92-byte failure)"
        )
        faults.break_fault("return-path")
        detection = watch_fault(faults.FAULTS["return-path"], 90)
        for line in detection.report():
            say(f"   {line}")
        say(
            "   (poll interval 2 s; breaking it re-creates the tunnel, so the link checks fail first)"
        )
        if detection.caught is None:
            return 1
        for ln in metric_lines(
            (
                "qbtvpn_check_reason",
                "qbtvpn_wireguard_peer_receive_bytes_total",
                "qbtvpn_remediation",
            )
        ):
            say(f"   {ln}")
        say("   letting remediation act for 20 s (stop torrents, restart the tunnel) ...")
        watch("remediation", lambda h: False, 20, quiet=True)
        say(f"   torrents: {torrent_states()}")

        say("\n4. Healing the return path")
        faults.heal_fault("return-path")
        # Recovered: every check passes and the held torrents are resumed.
        took = watch("recovery", lambda h: h.startswith("alive; ok:") and "holding" not in h, 120)
        if took is not None:
            say(f"   recovered after {took:.1f} s")
        say(f"   torrents: {torrent_states()}")
        return 0 if took is not None else 1
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - reported in one line, then torn down
        say(f"\ndemo failed: {type(e).__name__}: {e}")
        return 1
    finally:
        say("\n5. Tearing down (daemon, lab) ...")
        procs.stop("daemon", "python", timeout=10)
        control.down()
        say(f"   done; the demo took {time.monotonic() - t_start:.0f} s")
