"""The daemon loop: scheduling, sd_notify, signals, /metrics and /healthz.

The sources and checks are fakes (the loop's logic is what is under test);
everything else is real: the sd_notify datagrams arrive on a socket the test
binds, signals are real signals to a daemon in a subprocess, and /metrics is
fetched over HTTP from the daemon's own server.

Run as ``python -m tests.core.test_daemon child MODE CONFIG`` it is that subprocess.
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import pytest

from qbt_vpn_watchdog.checks import CheckSpec, load_all
from qbt_vpn_watchdog.daemon import Daemon
from qbt_vpn_watchdog.health import status_line
from qbt_vpn_watchdog.logs import _JournalFormatter, setup_logging
from qbt_vpn_watchdog.metrics import exposed_names
from qbt_vpn_watchdog.results import Outcome, RemediationView
from qbt_vpn_watchdog.sources import (
    LinkState,
    QbtState,
    SourceError,
    Sources,
    TorrentBrief,
    WgDevice,
    WgPeer,
)
from qbt_vpn_watchdog.systemd import Notifier
from tests.support.monitoring import free_port

REPO = Path(__file__).resolve().parents[2]
PUB = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


# --- fakes: sources, checks, remediator ---------------------------------------------


class World:
    """What the fake sources return; tests flip these between cycles."""

    def __init__(self) -> None:
        self.rx = 1000
        self.qbt_up = True
        self.dns_hang = threading.Event()  # set: the dns check hangs (until release)
        self.release = threading.Event()
        self.wg_slow = threading.Event()  # set: reading WireGuard takes until release
        self.exit_calls = 0
        self.exit_down = False  # exit_ip answers unreachable (no address) while set
        self.port_targets: list[str] = []  # the exit address each port_forward run was handed
        self.bind_says: list[str] = []  # reasons bind returns next, one per run (then ok)
        self.bind_runs: list[float] = []  # monotonic time of each bind run
        self.dns_provisional = 0  # runs of dns left that say "provisional"


class FakeWg:
    def __init__(self, world: World) -> None:
        self.w = world

    def read(self) -> WgDevice:
        if self.w.wg_slow.is_set():
            self.w.release.wait(30)
        self.w.rx += 4096
        peer = WgPeer(PUB, "192.0.2.1:1637", time.time() - 5, self.w.rx, 2 * self.w.rx, (), 15)
        return WgDevice("wg0", "uapi", None, (peer,))


class FakeLinks:
    def link(self, name):
        return LinkState(name, 7, True, 1320, ("10.150.0.2/32",), 500, 900, 5, 9)

    def route_interface(self, dst):
        return "wg0"


class FakeQbt:
    def __init__(self, world: World) -> None:
        self.w = world

    def state(self) -> QbtState:
        if not self.w.qbt_up:
            raise SourceError("qBittorrent at http://127.0.0.1:8080: connection refused")
        return QbtState(
            "v4.5.2", "2.8.19", "wg0", "10.150.0.2", 51413, "*", 8080, "connected", 40,
            100, 200, 1000, 2000, ("10.150.0.2",), (TorrentBrief("a" * 40, "x", "stalledDL", ()),),
        )  # fmt: skip


class FakeEvents:
    """Stands in for LinkEvents: the test fires the kernel's "the tunnel is gone"."""

    def __init__(self, world: World) -> None:
        world.events = self
        self.on_event = None
        self.closed = False

    def start(self, on_event) -> None:
        self.on_event = on_event

    def fire(self) -> None:
        self.on_event()

    def close(self) -> None:
        self.closed = True


def fake_sources(world: World):
    def factory(cfg) -> Sources:
        return Sources(
            wireguard=FakeWg(world),
            links=FakeLinks(),
            dns=None,
            http=None,
            qbittorrent=FakeQbt(world),
            events=FakeEvents(world),
        )

    return factory


def fake_specs(world: World) -> dict[str, CheckSpec]:
    def handshake(ctx):
        dev = ctx.wireguard()
        ctx.tunnel_link()
        return Outcome.passed(f"{len(dev.peers)} peer")

    def dns(ctx):
        if world.dns_hang.is_set():
            world.release.wait(60)
        provisional = world.dns_provisional > 0
        world.dns_provisional -= provisional
        return Outcome.passed(
            "resolved",
            observations={"latency_seconds:airvpn.org": 0.012},
            facts={"resolver": "10.128.0.1", "resolver_interface": "wg0"},
            provisional=provisional,
        )

    def exit_ip(ctx):
        world.exit_calls += 1
        if world.exit_down:
            return Outcome.failed("unreachable", "no answer")
        return Outcome.passed(
            "AirVPN exit",
            observations={"airvpn": 1.0},
            facts={"ip": "198.51.100.7", "country": "NL"},
        )

    def bind(ctx):
        world.bind_runs.append(time.monotonic())
        q = ctx.qbittorrent()
        if world.bind_says:
            return Outcome.failed(world.bind_says.pop(0), "bound to qvll1")
        return Outcome.passed(f"bound to {q.interface_name}")

    def path_mtu(ctx):
        return Outcome.passed(
            "1320-byte packets cross both ways",
            observations={"path_mtu_bytes": 1320.0, "tunnel_mtu_bytes": 1320.0},
        )

    def killswitch(ctx):
        return Outcome.passed(
            "refused out of qvll1 (IPv4/IPv6)",
            facts={"qvll1 ipv4": "refused", "qvll1 ipv6": "refused"},
        )

    def port_forward(ctx):
        world.port_targets.append(ctx.exit_ip)
        return Outcome.passed("answered", observations={"connect_seconds": 0.04})

    # The real checks' specs (reasons, series, order) with these functions.
    return {
        "killswitch": real_spec("killswitch", killswitch),
        "port_forward": real_spec("port_forward", port_forward),
        "handshake": real_spec("handshake", handshake),
        "dns": real_spec("dns", dns),
        "path_mtu": real_spec("path_mtu", path_mtu),
        "exit_ip": real_spec("exit_ip", exit_ip),
        "bind": real_spec("bind", bind),
    }


def real_spec(name, fn) -> CheckSpec:
    return dataclasses.replace(load_all()[name], fn=fn)


class FakeRemediator:
    """Counts steps; holds torrents while anything fails; can block forever (a stalled loop)."""

    def __init__(self, cfg, sources, stall_at: int | None = None) -> None:
        self.steps: deque[tuple[dict, dict, float]] = deque(maxlen=10)  # bounded: RSS is measured
        self.calls = 0
        self.stall_at = stall_at
        self.reconfigured = 0

    def step(self, histories, now) -> RemediationView:
        results = {k: v[-1] for k, v in histories.items() if v}
        self.steps.append((results, {k: tuple(v) for k, v in histories.items()}, now))
        self.calls += 1
        if self.stall_at is not None and self.calls >= self.stall_at:
            threading.Event().wait()  # never returns: the loop itself is stalled
        failing = [r for r in results.values() if not r.ok]
        if failing:
            return RemediationView(
                "holding", held_stopped=3, actions_total={"stop_torrents": 1},
                failures_total={"stop_torrents": 0}, summary="holding 3 torrents",
            )  # fmt: skip
        return RemediationView(
            "ok", actions_total={"stop_torrents": 0}, failures_total={"stop_torrents": 0}
        )

    def reconfigure(self, cfg, sources) -> None:
        self.reconfigured += 1


def config_text(port: int, interval: float = 0.2, dns_timeout: float = 0.3, **over) -> str:
    exit_enabled = over.get("exit_ip", True)
    return f"""
[watchdog]
interval = {interval}
listen_address = "{over.get("listen", "127.0.0.1")}"
listen_port = {port}
history = 5
mode = "{over.get("mode", "enforce")}"

[checks.handshake]
timeout = 1.0
[checks.return_path]
enabled = false
[checks.dns]
timeout = {dns_timeout}
[checks.exit_ip]
enabled = {"true" if exit_enabled else "false"}
interval = {over.get("exit_interval", 60.0)}
timeout = 1.0
[checks.bind]
timeout = 1.0
[checks.webui]
enabled = false
[checks.path_mtu]
enabled = {"true" if over.get("path_mtu") else "false"}
[checks.killswitch]
enabled = {"true" if over.get("guards") else "false"}
[checks.port_forward]
enabled = {"true" if over.get("guards") else "false"}
interval = 0.0

[remediation]
# Part of the stall limit (health.stall_limit): short, so a stalled loop shows in seconds.
action_timeout = {over.get("action_timeout", 0.5)}
"""



def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, str, float]:
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read().decode()
    finally:
        c.close()
    return r.status, body, time.monotonic() - t0


def metric(text: str, family: str, /, **labels) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    line = f"{family}{{{want}}}" if labels else family
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return None


# --- the subprocess -------------------------------------------------------------------


def child(mode: str, config_path: str) -> int:
    setup_logging()
    world = World()
    if mode == "hang":
        world.dns_hang.set()
    stall_at = 4 if mode == "stall" else None
    d = Daemon(
        config_path,
        fake_sources(world),
        lambda cfg, src: FakeRemediator(cfg, src, stall_at),
        specs=fake_specs(world),
    )
    if mode == "term-in-thread":
        # The kernel may hand a process-directed SIGTERM to any thread; make it
        # land on another thread than the one sleeping in the loop.
        def term_from_a_thread() -> None:
            while not d._ready:
                time.sleep(0.05)
            time.sleep(0.3)  # the loop is asleep by now (interval 30 s)
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

        threading.Thread(target=term_from_a_thread, daemon=True).start()
    return d.run()


class Child:
    """The daemon in a subprocess, with a real NOTIFY_SOCKET bound by the test."""

    def __init__(self, tmp_path: Path, mode: str, watchdog_usec: int = 10_000_000, **cfg) -> None:
        self.port = free_port()
        self.config = tmp_path / "config.toml"
        self.config.write_text(config_text(self.port, **cfg))
        self.sock_path = str(tmp_path / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self.stderr_path = tmp_path / "stderr.log"
        env = dict(os.environ, NOTIFY_SOCKET=self.sock_path, WATCHDOG_USEC=str(watchdog_usec))
        env.pop("JOURNAL_STREAM", None)
        self.t0 = time.monotonic()
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.core.test_daemon", "child", mode, str(self.config)],
                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip

    def collect(self, seconds: float, until=None) -> list[dict[str, str]]:
        """Read datagrams for up to ``seconds`` (or until ``until(all messages)`` is true)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if until is not None and until([m for _, m in self.messages]):
                break
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            msg = dict(line.split("=", 1) for line in data.decode().split("\n"))
            self.messages.append((time.monotonic(), msg))
        return [m for _, m in self.messages]

    def wait_for(self, key: str, seconds: float = 5.0, count: int = 1) -> list[dict[str, str]]:
        msgs = self.collect(seconds, lambda ms: sum(key in m for m in ms) >= count)
        assert sum(key in m for m in msgs) >= count, (key, msgs, self.stderr())
        return msgs

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.sock.close()


@pytest.fixture
def spawn(tmp_path):
    children: list[Child] = []

    def start(mode: str, **kw) -> Child:
        c = Child(tmp_path, mode, **kw)
        children.append(c)
        return c

    yield start
    for c in children:
        c.close()


# --- the daemon in a subprocess: sd_notify and signals ------------------------------------


def test_ready_after_first_cycle_and_watchdog_keeps_coming_while_a_check_hangs(spawn):
    c = spawn("hang")
    msgs = c.wait_for("WATCHDOG", seconds=10, count=6)
    # READY=1 exactly once, first, after the first cycle (which the hung check made
    # last its 0.3 s timeout), carrying the status of that cycle.
    ready = [m for m in msgs if "READY" in m]
    assert len(ready) == 1 and msgs[0] is ready[0]
    assert "dns (timeout)" in ready[0]["STATUS"] and ready[0]["STATUS"].startswith("UNSAFE")
    assert c.messages[0][0] - c.t0 >= 0.3
    # Every cycle: WATCHDOG=1 with a STATUS line, although dns never answers.
    pings = [m for m in msgs if "WATCHDOG" in m]
    assert all(
        "dns (timeout)" in m["STATUS"] and "holding 3 torrents" in m["STATUS"] for m in pings
    )
    times = [t for t, m in c.messages if "WATCHDOG" in m]
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) < 1.5
    # The hung check shows in /metrics, scraped over HTTP from the daemon's server.
    status, text, _ = http_get(c.port, "/metrics")
    assert status == 200
    assert metric(text, "qbtvpn_check_reason", check="dns", reason="timeout") == 1
    assert metric(text, "qbtvpn_check_success", check="handshake") == 1
    # One log line per state change, not one per cycle.
    assert c.stderr().count("dns failed: timeout") == 1, c.stderr()
    assert "remediation: ok -> holding" in c.stderr()


def test_watchdog_stops_when_the_loop_itself_stalls(spawn):
    c = spawn("stall")  # the remediator blocks forever in the 4th cycle
    c.wait_for("WATCHDOG", seconds=10, count=3)
    c.collect(2.0)  # the loop is stuck: nothing may arrive any more
    pings = [t for t, m in c.messages if "WATCHDOG" in m]
    assert len(pings) == 3, c.messages
    assert time.monotonic() - pings[-1] > 1.5
    # The HTTP side still answers at once, and says the loop is stalled.
    deadline = time.monotonic() + 5
    while True:
        status, body, took = http_get(c.port, "/healthz")
        if status == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 503 and body.startswith("stalled"), body
    assert took < 0.5
    assert c.proc.poll() is None


def test_sigterm_stops_promptly_with_stopping(spawn):
    c = spawn("ok", interval=30.0)  # asleep between cycles: SIGTERM must wake it
    c.wait_for("READY")
    t0 = time.monotonic()
    c.proc.send_signal(signal.SIGTERM)
    c.wait_for("STOPPING")
    assert c.proc.wait(5) == 0
    assert time.monotonic() - t0 < 2.0
    assert "stopping" in c.stderr()


def test_sigterm_delivered_to_another_thread_still_wakes_the_loop(spawn):
    c = spawn("term-in-thread", interval=30.0)
    c.wait_for("READY")
    t0 = time.monotonic()
    c.wait_for("STOPPING")
    assert c.proc.wait(5) == 0
    assert time.monotonic() - t0 < 2.0


def test_sighup_reload_keeps_the_old_config_when_the_new_one_is_invalid(spawn):
    c = spawn("ok")
    c.wait_for("READY")
    _, text, _ = http_get(c.port, "/metrics")
    assert metric(text, "qbtvpn_check_success", check="exit_ip") == 1
    good = c.config.read_text()

    c.config.write_text(good.replace("interval = 0.2", 'interval = "fast"') + "typo = 1\n")
    c.proc.send_signal(signal.SIGHUP)
    msgs = c.wait_for("READY", count=2)
    reloading = [m for m in msgs if "RELOADING" in m]
    assert len(reloading) == 1 and int(reloading[0]["MONOTONIC_USEC"]) > 0
    assert msgs.index(reloading[0]) < [i for i, m in enumerate(msgs) if "READY" in m][1]
    n = sum("WATCHDOG" in m for m in msgs)
    c.wait_for("WATCHDOG", count=n + 3)  # still looping on the old config
    err = c.stderr()
    assert "reload rejected, keeping the running configuration" in err
    assert 'watchdog.interval: expected a number, got "fast"' in err
    assert "typo: unknown key" in err  # every error, not just the first
    _, text, _ = http_get(c.port, "/metrics")
    assert metric(text, "qbtvpn_config_reload_failures_total") == 1
    assert metric(text, "qbtvpn_check_success", check="exit_ip") == 1

    # A valid change is applied: exit_ip disabled disappears from the metrics.
    c.config.write_text(config_text(c.port, exit_ip=False))
    c.proc.send_signal(signal.SIGHUP)
    c.wait_for("READY", count=3)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _, text, _ = http_get(c.port, "/metrics")
        if metric(text, "qbtvpn_check_success", check="exit_ip") is None:
            break
        time.sleep(0.1)
    assert metric(text, "qbtvpn_check_success", check="exit_ip") is None
    assert metric(text, "qbtvpn_check_success", check="dns") == 1
    assert metric(text, "qbtvpn_config_reload_failures_total") == 1
    assert "configuration reloaded" in c.stderr()
    c.proc.send_signal(signal.SIGTERM)
    assert c.proc.wait(5) == 0


# --- the daemon in this process: HTTP, scheduling, summaries ----------------------------------


class Clock:
    def __init__(self, t: float = 1_760_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_daemon(tmp_path, world=None, clock=time.time, remediator=True, **cfg):
    world = world or World()
    port = free_port()
    path = tmp_path / "config.toml"
    path.write_text(config_text(port, **cfg))
    d = Daemon(
        path,
        fake_sources(world),
        (lambda c, s: FakeRemediator(c, s)) if remediator else None,
        notifier=Notifier(None),
        clock=clock,
        specs=fake_specs(world),
    )
    return d, world, port


@pytest.fixture
def running(tmp_path):
    """A daemon running in a thread (no signals there); stopped at teardown."""
    started = []

    def start(**kw):
        d, world, port = make_daemon(tmp_path, **kw)
        t = threading.Thread(target=d.run, daemon=True)
        t.start()
        started.append((d, world, t))
        deadline = time.monotonic() + 5
        while d.snapshot is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert d.snapshot is not None
        return d, world, port

    yield start
    for d, world, t in started:
        world.release.set()
        d.stop()
        t.join(5)
        assert not t.is_alive()


def test_a_link_event_runs_the_link_checks_at_once_at_most_once_a_second(running):
    d, world, port = running(interval=30.0)  # asleep between cycles
    assert d.store.cycles == 1 and world.exit_calls == 1
    first = {n: r.started for n, r in d.snapshot.results.items()}
    t0 = time.monotonic()
    for _ in range(5):  # a burst: deleting a link sends several messages
        world.events.fire()
    while d.store.cycles < 2 and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    assert d.store.cycles == 2, "the event did not wake the loop"
    took = time.monotonic() - t0
    later = {n: r.started for n, r in d.snapshot.results.items()}
    # The link checks ran again, exit_ip (not a link check) did not.
    assert {n for n in later if later[n] != first[n]} == {"handshake", "dns", "bind"}
    assert world.exit_calls == 1
    time.sleep(0.5)
    assert d.store.cycles == 2, "a burst of events is one cycle"
    world.events.fire()  # within a second of the last event cycle: waits for the gap
    while d.store.cycles < 3 and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    assert d.store.cycles == 3 and time.monotonic() - t0 >= 1.0
    print(f"event -> cycle {took * 1000:.0f} ms")


def test_an_unsafe_result_is_confirmed_within_seconds_not_an_interval_later(running):
    d, world, port = running(interval=30.0)
    world.bind_says = ["wrong_interface", "wrong_interface"]  # unsafe: fail_after is 2
    t0 = time.monotonic()
    d.link_event()  # bind is a link check: it runs now, says unsafe once
    while len(world.bind_runs) < 3 and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    first, second = world.bind_runs[1:3]
    # Confirmed CONFIRM_GAP after the first: the second result trips the check.
    assert 0.9 <= second - first < 2.0, second - first
    assert d.remediator.steps[-1][0]["bind"].reason == "wrong_interface"
    # Tripped: remediation acts; the check goes back to the 30 s interval.
    time.sleep(2.0)
    assert len(world.bind_runs) == 3


def test_a_provisional_result_is_run_again_within_seconds(running):
    d, world, port = running(interval=30.0)
    n0 = d.store.cycles
    world.dns_provisional = 2
    d.link_event()  # dns is a link check: provisional twice, then settled
    t0 = time.monotonic()
    while d.store.cycles < n0 + 3 and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    assert d.store.cycles == n0 + 3, "two confirm cycles after the event's"
    time.sleep(1.5)
    assert d.store.cycles == n0 + 3, "settled: nothing more until the interval"


def test_metrics_over_http_has_every_catalogue_family(running):
    d, world, port = running(path_mtu=True, guards=True)
    world.qbt_up = True
    status, text, _ = http_get(port, "/metrics")
    assert status == 200
    typed = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    with_samples = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"
    }
    # The catalogue and prometheus_client's process collector (watchdog.process_metrics,
    # on by default); never its python_/gc defaults.
    process = {n for n in typed if n.startswith("process_")}
    assert "process_resident_memory_bytes" in process and "process_open_fds" in process
    assert typed - process == exposed_names()
    assert with_samples - process == exposed_names()
    assert not any(n.startswith(("python_", "gc_")) for n in typed)
    assert metric(text, "qbtvpn_healthy") == 1
    assert metric(text, "qbtvpn_dns_lookup_duration_seconds", name="airvpn.org") == 0.012
    assert metric(text, "qbtvpn_exit_ip_info", country="NL", ip="198.51.100.7") == 1
    assert metric(text, "qbtvpn_remediations_total", action="stop_torrents") == 0


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_metrics_on_the_served_exposition(running):
    d, world, port = running()
    _, text, _ = http_get(port, "/metrics")
    p = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr


def test_healthz_is_liveness_with_the_summary(running, tmp_path):
    d, _, _ = make_daemon(tmp_path)
    assert d.health() == (503, "starting: no cycle finished yet")
    d, world, port = running()
    status, body, _ = http_get(port, "/healthz")
    assert (status, body) == (200, "alive; ok: 4/4 checks passed\n")
    # A failing VPN is still a live loop: 200, with the failure in the body.
    world.qbt_up = False
    deadline = time.monotonic() + 5
    while "bind" not in body and time.monotonic() < deadline:
        status, body, _ = http_get(port, "/healthz")
        time.sleep(0.05)
    assert status == 200 and body.startswith("alive; UNSAFE bind (error)"), body
    assert http_get(port, "/nope")[0] == 404


def test_readyz_follows_the_tunnel_and_healthz_the_loop(running):
    d, world, port = running()
    assert http_get(port, "/readyz")[:2] == (200, "ready; ok: 4/4 checks passed\n")
    world.qbt_up = False  # bind fails closed (unsafe); the remediator holds torrents
    deadline = time.monotonic() + 5
    status, body = 200, ""
    while status == 200 and time.monotonic() < deadline:
        status, body, _ = http_get(port, "/readyz")
        time.sleep(0.05)
    assert status == 503 and body.startswith("not ready: unsafe: bind"), body
    assert "3 torrents held" in body
    assert http_get(port, "/healthz")[0] == 200  # the loop is alive all along
    world.qbt_up = True
    while status == 503 and time.monotonic() < deadline + 5:
        status, body, _ = http_get(port, "/readyz")
        time.sleep(0.05)
    assert status == 200, body


def test_ipv6_listen_address(running):
    if not socket.has_ipv6 or not Path("/proc/net/if_inet6").exists():
        pytest.skip("no IPv6 here")
    d, _, port = running(listen="::1")
    c = http.client.HTTPConnection("::1", port, timeout=5)
    try:
        c.request("GET", "/healthz")
        assert c.getresponse().status == 200
    finally:
        c.close()


def test_a_scrape_while_a_source_is_slow_returns_at_once(running):
    d, world, port = running()
    before = d.store.cycles
    world.wg_slow.set()  # the next handshake check blocks in the WireGuard read
    time.sleep(0.5)
    durations = [http_get(port, "/metrics")[2] for _ in range(20)]
    assert max(durations) < 0.5, durations
    assert d.store.cycles <= before + 1  # the loop really was waiting on the source
    world.release.set()


def test_due_checks_honour_their_own_interval(tmp_path):
    clock = Clock()
    d, world, _ = make_daemon(tmp_path, clock=clock, exit_interval=60.0, interval=10.0)
    start = clock.t
    assert set(d.due_checks(clock.t)) == {"handshake", "dns", "exit_ip", "bind"}
    for _ in range(13):  # two minutes of 10 s cycles
        d.run_cycle()
        clock.t += 10
        if (clock.t - start) % 60 != 0:
            assert "exit_ip" not in d.due_checks(clock.t)
    assert world.exit_calls == 3  # t=0, 60, 120: never faster than its interval
    assert d.store.cycles == 13 and len(d.snapshot.results) == 4
    # The exit_ip result stays in the snapshot between its runs.
    assert d.snapshot.results["exit_ip"].started == clock.t - 10


def test_history_is_bounded_and_passed_to_the_remediator(tmp_path):
    d, world, _ = make_daemon(tmp_path, clock=Clock())
    for _ in range(8):
        d.run_cycle()
    results, histories, now = d.remediator.steps[-1]
    assert set(results) == {"handshake", "dns", "exit_ip", "bind"}
    assert len(histories["handshake"]) == 5  # history = 5 in the config
    assert len(histories["exit_ip"]) == 1  # it ran once (60 s interval)
    assert histories["handshake"][-1] is results["handshake"]


def test_state_changes_are_logged_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="qbt_vpn_watchdog.daemon")
    d, world, _ = make_daemon(tmp_path, clock=Clock())
    d.run_cycle()
    world.qbt_up = False
    for _ in range(5):
        d.run_cycle()
    world.qbt_up = True
    for _ in range(3):
        d.run_cycle()
    lines = [r.getMessage() for r in caplog.records]
    failed = [m for m in lines if m.startswith("bind failed")]
    assert failed == ["bind failed: error: SourceError: qBittorrent at http://127.0.0.1:8080: "
                      "connection refused"]  # fmt: skip
    assert lines.count("bind recovered (was error)") == 1
    assert sum("remediation:" in m for m in lines) == 2  # ok -> holding -> ok


def test_status_lines(tmp_path):
    d, world, _ = make_daemon(tmp_path, clock=Clock())
    assert status_line(d.run_cycle(), d.config, {}) == "ok: 4/4 checks passed"
    world.qbt_up = False
    d.run_cycle()
    snap = d.run_cycle()
    assert d.status_line == "UNSAFE bind (error) for 2 cycles; holding 3 torrents"
    assert status_line(snap, d.config, d.store.histories(d.check_names)) == d.status_line
    d2, world2, _ = make_daemon(tmp_path, clock=Clock(), remediator=False, mode="observe")
    world2.qbt_up = False
    d2.run_cycle()
    assert d2.status_line == "FAILING bind (error) for 1 cycle [observe only]"


def test_a_source_that_fails_reads_as_down_in_metrics(tmp_path):
    d, world, _ = make_daemon(tmp_path, clock=Clock())
    d.run_cycle()
    assert metric(d.exposition.render()[0].decode(), "qbtvpn_qbittorrent_up") == 1
    world.qbt_up = False
    d.run_cycle()
    text = d.exposition.render()[0].decode()
    assert metric(text, "qbtvpn_qbittorrent_up") == 0
    assert metric(text, "qbtvpn_qbittorrent_dht_nodes") is None  # no stale values


def test_a_remediator_bug_is_logged_once_and_the_loop_goes_on(tmp_path, caplog):
    d, world, _ = make_daemon(tmp_path, clock=Clock())

    def boom(*a):
        raise RuntimeError("policy bug")

    d.remediator.step = boom
    for _ in range(3):
        d.run_cycle()
    assert d.store.cycles == 3
    assert sum("policy bug" in r.getMessage() for r in caplog.records) == 1


def test_watchdog_sec_not_covering_every_action_of_a_cycle_is_warned(tmp_path, caplog):
    from qbt_vpn_watchdog.systemd import watchdog_sec

    d, _, _ = make_daemon(tmp_path, interval=10.0, action_timeout=30.0)  # the default
    cfg = d.config
    need = watchdog_sec(
        10.0, [cfg.check(n).timeout for n in d.check_names], cfg.remediation.action_timeout
    )
    # The old rule (2 x (interval + longest timeout)) was happy with 90 s: one
    # cycle's stop + tier-2 restart + rebind alone can take 3 x 30 s.
    d.notifier = Notifier("/nonexistent.sock", 90_000_000)
    d._warn_watchdog_interval()
    assert "WatchdogSec=90 s does not cover the worst cycles" in caplog.text
    assert f"use WatchdogSec={need} or more" in caplog.text
    caplog.clear()
    d.notifier = Notifier("/nonexistent.sock", need * 1_000_000)
    d._warn_watchdog_interval()
    assert "WatchdogSec" not in caplog.text


def test_the_plain_unit_watchdog_sec_covers_the_default_config():
    from qbt_vpn_watchdog.config import Config
    from qbt_vpn_watchdog.systemd import watchdog_sec

    cfg = Config()
    unit = (
        Path(__file__).resolve().parents[2] / "systemd" / "qbt-vpn-watchdog.service"
    ).read_text()
    got = int(re.search(r"(?m)^WatchdogSec=(\d+)$", unit).group(1))
    timeouts = [cfg.check(n).timeout for n in cfg.enabled_checks()]
    assert got == watchdog_sec(cfg.watchdog.interval, timeouts, cfg.remediation.action_timeout)


def test_reload_in_process_keeps_state_and_reconfigures_the_remediator(tmp_path):
    d, world, port = make_daemon(tmp_path, clock=Clock())
    for _ in range(3):
        d.run_cycle()
    Path(d.config_path).write_text(config_text(port, exit_ip=False))
    assert d.reload()
    assert d.check_names == ["handshake", "dns", "bind"]
    assert d.remediator.reconfigured == 1
    assert len(d.store.history("handshake")) == 3  # histories survive a reload
    Path(d.config_path).write_text("[watchdog]\ninterval = -1\n")
    assert not d.reload()
    assert d.store.reload_failures == 1 and d.config.watchdog.interval == 0.2


def test_invalid_config_at_start_raises_config_error(tmp_path):
    from qbt_vpn_watchdog.config import ConfigError

    p = tmp_path / "bad.toml"
    p.write_text("[watchdog]\ninterval = 0\n")
    with pytest.raises(ConfigError):
        Daemon(p, fake_sources(World()), specs=fake_specs(World()), notifier=Notifier(None))


def test_a_broken_install_fails_at_start_instead_of_observing_only(tmp_path):
    # The remediation module cannot be imported (a broken install): the service
    # must not run on, silently protecting nothing; it exits 1 and says why.
    # Every check off: whatever happens, nothing is sent anywhere.
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"[watchdog]\ninterval = 0.5\nlisten_port = {free_port()}\n"
        + "".join(f"[checks.{n}]\nenabled = false\n" for n in load_all())
    )
    code = (
        "import sys; sys.modules['qbt_vpn_watchdog.actions'] = None\n"
        "from qbt_vpn_watchdog.daemon import main; sys.exit(main(sys.argv[1]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    try:
        p = subprocess.run(
            [sys.executable, "-c", code, str(cfg)], cwd=REPO, env=env,
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"still running after 20 s without remediation: {e.stderr}")
    assert p.returncode == 1, p.stderr
    assert "cannot start" in p.stderr and "qbt_vpn_watchdog.actions" in p.stderr


def test_journald_lines_carry_a_priority_and_no_timestamp(tmp_path, monkeypatch):
    f = tmp_path / "journal"
    with open(f, "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        root = logging.getLogger()
        saved = root.handlers[:]
        root.handlers.clear()
        try:
            setup_logging(stream)
            logging.getLogger("qbt_vpn_watchdog.daemon").warning("dns failed: timeout")
            logging.getLogger("qbt_vpn_watchdog.daemon").info("dns recovered")
        finally:
            root.handlers[:] = saved
    assert f.read_text() == "<4>dns failed: timeout\n<6>dns recovered\n"
    rec = logging.LogRecord("x", logging.ERROR, "", 0, "a\nb", None, None)
    assert _JournalFormatter("%(message)s").format(rec) == "<3>a\n<3>b"


def test_metrics_render_once_per_snapshot(tmp_path):
    d, world, _ = make_daemon(tmp_path, clock=Clock())
    d.run_cycle()
    snap, variants = d.exposition._cached
    assert snap is d.snapshot and len(variants) == 1  # by the loop, not a scrape
    ((rendered, _accept),) = variants.values()
    a = d.exposition.render()[0]
    assert a is rendered and d.exposition.render()[0] is a  # scrapes get those bytes
    d.run_cycle()
    b = d.exposition.render()[0]
    assert b is not a and metric(b.decode(), "qbtvpn_cycles_total") == 2


def test_scrapes_keep_their_connection(running):
    d, world, port = running()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        for _ in range(3):
            c.request("GET", "/metrics")
            r = c.getresponse()
            assert r.status == 200 and r.version == 11
            r.read()
        sock = c.sock
        c.request("GET", "/healthz")
        c.getresponse().read()
        assert c.sock is sock  # one TCP connection for every request
    finally:
        c.close()


def test_snapshot_is_swapped_not_mutated(tmp_path):
    d, world, _ = make_daemon(tmp_path, clock=Clock())
    first = d.run_cycle()
    frozen = (dict(first.results), dict(first.readings), first.cycles, first.last_cycle)
    d.run_cycle()
    assert d.snapshot is not first and d.snapshot.cycles == 2
    assert (dict(first.results), dict(first.readings), first.cycles, first.last_cycle) == frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.cycles = 5


# --- measurements (not a test): python -m tests.core.test_daemon bench [CYCLES] -------------------


def bench(cycles: int = 10_000) -> None:
    """CPU per cycle with instant fake sources, /metrics render time, RSS over many cycles."""
    import resource
    import statistics
    import tempfile

    def rss_kib() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process
        return ru.ru_utime + ru.ru_stime

    world = World()
    specs = fake_specs(world)
    for extra in ("return_path", "webui"):  # all six checks, each in its own thread
        specs[extra] = real_spec(extra, lambda ctx: Outcome.passed())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        text = config_text(free_port(), exit_interval=0.0)
        path.write_text(text.replace("enabled = false", "enabled = true"))
        d = Daemon(path, fake_sources(world), lambda c, s: FakeRemediator(c, s),
                   notifier=Notifier(None), specs=specs)  # fmt: skip
        assert len(d.check_names) == 6, d.check_names
        for _ in range(100):  # warm up
            d.run_cycle()
        rss = [(d.store.cycles, rss_kib())]
        c0, w0 = cpu(), time.perf_counter()
        for i in range(cycles):
            d.run_cycle()
            if (i + 1) % (cycles // 5) == 0:
                rss.append((d.store.cycles, rss_kib()))
        c1, w1 = cpu(), time.perf_counter()
        print(f"cycles: {cycles}, 6 checks each (instant fake sources)")
        print(f"CPU per cycle (user+sys, all threads): {(c1 - c0) / cycles * 1e6:.0f} us")
        print(f"wall per cycle: {(w1 - w0) / cycles * 1e6:.0f} us")
        print("RSS (cycles -> KiB): " + ", ".join(f"{n}: {k}" for n, k in rss))
        times = []
        for _ in range(1000):
            d.exposition.forget()  # the render itself, not the per-snapshot cache
            t0 = time.perf_counter()
            body = d.exposition.render()[0]
            times.append(time.perf_counter() - t0)
        times.sort()
        lines = len(body.splitlines())
        print(
            f"/metrics render ({len(body)} bytes, {lines} lines): median "
            f"{statistics.median(times) * 1e3:.2f} ms, p99 {times[989] * 1e3:.2f} ms"
        )


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "child":
    raise SystemExit(child(sys.argv[2], sys.argv[3]))
if __name__ == "__main__" and len(sys.argv) >= 2 and sys.argv[1] == "bench":
    bench(int(sys.argv[2]) if len(sys.argv) > 2 else 10_000)


def test_reload_result_and_time_are_exported(tmp_path):
    clock = Clock()
    d, world, port = make_daemon(tmp_path, clock=clock)
    d.run_cycle()
    text = d.exposition.render()[0].decode()
    assert metric(text, "qbtvpn_config_last_reload_successful") == 1
    assert metric(text, "qbtvpn_config_last_reload_success_timestamp_seconds") == clock.t  # start
    clock.t += 60
    Path(d.config_path).write_text("[watchdog]\ninterval = -1\n")
    assert not d.reload()
    # Seen at the next scrape, before any cycle.
    text = d.exposition.render()[0].decode()
    assert metric(text, "qbtvpn_config_last_reload_successful") == 0
    assert metric(text, "qbtvpn_config_last_reload_success_timestamp_seconds") == clock.t - 60
    clock.t += 60
    Path(d.config_path).write_text(config_text(port))
    assert d.reload()
    text = d.exposition.render()[0].decode()
    assert metric(text, "qbtvpn_config_last_reload_successful") == 1
    assert metric(text, "qbtvpn_config_last_reload_success_timestamp_seconds") == clock.t


@pytest.mark.parametrize("mode", ["observe", "enforce"])
def test_the_mode_is_exported_and_healthz_says_observe(tmp_path, mode, caplog):
    d, world, port = make_daemon(tmp_path, clock=Clock(), mode=mode)
    d.run_cycle()
    text = d.exposition.render()[0].decode()
    assert metric(text, "qbtvpn_remediation_mode", mode=mode) == 1
    other = {"observe": "enforce", "enforce": "observe"}[mode]
    assert metric(text, "qbtvpn_remediation_mode", mode=other) == 0
    code, body = d.health()
    assert code == 200
    if mode == "observe":
        assert body.startswith("alive (observe mode: reports what it would do, never acts); ")
    else:
        assert body.startswith("alive; ") and "observe" not in body


def test_the_start_log_says_observe_mode(running, caplog):
    caplog.set_level(logging.INFO, "qbt_vpn_watchdog.daemon")
    running(mode="observe")
    started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("started")]
    assert started and started[0].startswith(
        "started in observe (reports what it would do, never stops or restarts anything) mode:"
    )


def test_port_forward_is_handed_the_last_exit_address_exit_ip_saw(tmp_path):
    d, world, _ = make_daemon(tmp_path, guards=True, exit_interval=0.0)
    try:
        d.run_cycle()  # both run at once: no address yet
        d.run_cycle()
        world.exit_down = True  # the tunnel down: exit_ip sees no address...
        d.run_cycle()
        d.run_cycle()
        # ...and port_forward still targets the last one it saw (it reports the port closed).
        assert world.port_targets == ["", "198.51.100.7", "198.51.100.7", "198.51.100.7"]
    finally:
        d.stop()
