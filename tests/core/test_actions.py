"""The Remediator against fakes of the qBittorrent/WireGuard interfaces, and the
real side effects that can run here: the restart command (a real process: argv,
timeout, exit status) and tier 1 against a real wireguard-go's UAPI socket."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from qbt_vpn_watchdog import config as config_mod
from qbt_vpn_watchdog.actions import (
    ActionError,
    Remediator,
    resolve_endpoint,
    run_command,
    run_retrying,
)
from qbt_vpn_watchdog.checks import load_all
from qbt_vpn_watchdog.sources import Listener, SourceError
from tests.core.test_policy import CHECKS, ModelLinks, ModelQbt, ModelWg, Srcs, res
from tests.support.session_names import SESSION, unique

SPECS = load_all()  # the checks' reasons, handed to the policy as the daemon does

BAD = {"return_path": "no_return_traffic"}


def cfg(extra: str = "", mode: str = "enforce") -> config_mod.Config:
    return config_mod.parse(
        f'[watchdog]\nmode = "{mode}"\n[remediation]\n' + textwrap.dedent(extra)
    )


class Driver:
    """Feeds cycles of results to a Remediator like the daemon does."""

    def __init__(self, rem: Remediator, t: float = 1000.0) -> None:
        self.rem = rem
        self.hist: dict[str, list] = {c: [] for c in CHECKS}
        self.t = t

    def cycle(self, dt: float = 10.0, **reasons):
        self.t += dt
        results = {c: res(c, reasons.get(c, "ok"), self.t) for c in CHECKS}
        for c, r in results.items():
            self.hist[c].append(r)
        return self.rem.step({c: tuple(h) for c, h in self.hist.items()}, self.t + 0.1)


def make(extra: str = "", mode: str = "enforce", n: int = 3, **kw):
    qbt, wg = ModelQbt(n), ModelWg()
    commands: list[list[str]] = []
    kw.setdefault("run_command", lambda argv, timeout: commands.append(list(argv)) or "")
    kw.setdefault("resolve", lambda ep: ep)
    rem = Remediator(cfg(extra, mode), Srcs(qbt, wg), rng=random.Random(0), specs=SPECS, **kw)
    return Driver(rem), qbt, wg, commands


# --- the whole incident ----------------------------------------------------------------


def test_incident_stop_restart_escalate_recover():
    d, qbt, wg, commands = make(
        """
        restart_unit = "wg-quick-wg0.service"
        alternative_endpoints = ["198.51.100.7:1637"]
        restart_backoff_initial = 1.0
        restart_backoff_max = 1.0
        """
    )
    qbt.paused["t2"] = True  # the user stopped this one before the fault
    d.cycle()
    v = d.cycle(**BAD)
    assert v.state == "ok" and qbt.calls == []
    v = d.cycle(**BAD)
    assert v.state == "restarting" and v.held_stopped == 2
    assert qbt.tags["t0"] == {"watchdog-stopped"} and qbt.tags["t2"] == set()
    assert wg.calls == ["set_endpoint 192.0.2.1:1637"]  # tier 1: the peer's own endpoint
    assert v.actions_total["stop_torrents"] == 1 and v.actions_total["restart_tunnel"] == 1
    d.cycle(**BAD)
    d.cycle(**BAD)  # two fresh failures after the back-off: tier 2
    assert commands == [["systemctl", "restart", "wg-quick-wg0.service"]]
    d.cycle(**BAD)
    d.cycle(**BAD)  # tier 3
    assert wg.calls[-1] == "set_endpoint 198.51.100.7:1637"
    assert d.cycle().state == "holding"  # tunnel back: waiting for 3 good cycles
    for _ in range(2):
        v = d.cycle()
    assert v.state == "ok" and v.held_stopped == 0
    assert qbt.paused == {"t0": False, "t1": False, "t2": True}
    assert v.actions_total["resume_torrents"] == 1 and v.actions_total["restart_tunnel"] == 3
    assert sum(v.failures_total.values()) == 0


def test_restart_command_wins_over_unit():
    d, qbt, wg, commands = make(
        """
        restart_unit = "wg-quick-wg0.service"
        restart_command = ["/usr/local/bin/lab", "restart-tunnel"]
        restart_backoff_initial = 1.0
        restart_backoff_max = 1.0
        """
    )
    for _ in range(4):
        d.cycle(**BAD)
    assert commands == [["/usr/local/bin/lab", "restart-tunnel"]]


def test_configured_endpoint_is_resolved_for_tier1():
    seen = []
    d, qbt, wg, commands = make(
        'endpoint = "europe.vpn.example:1637"\n',
        resolve=lambda ep: seen.append(ep) or "203.0.113.9:1637",
    )
    d.cycle(**BAD)
    d.cycle(**BAD)
    assert seen == ["europe.vpn.example:1637"]
    assert wg.calls == ["set_endpoint 203.0.113.9:1637"]


def no_such_name(*a, **k):
    raise socket.gaierror(-2, "Name or service not known")


def test_resolve_endpoint_uses_the_given_resolver_ipv4_first():
    def fake(host, port, type=0):
        assert host == "europe.vpn.example" and port == 1637
        return [
            (socket.AF_INET6, type, 17, "", ("2001:db8::1", port, 0, 0)),
            (socket.AF_INET, type, 17, "", ("192.0.2.44", port)),
        ]

    assert resolve_endpoint("europe.vpn.example:1637", fake) == "192.0.2.44:1637"
    assert resolve_endpoint("[2001:db8::5]:51820", fake) == "[2001:db8::5]:51820"
    assert resolve_endpoint("192.0.2.1:1", fake) == "192.0.2.1:1"
    with pytest.raises(ActionError, match="cannot resolve nowhere"):
        resolve_endpoint("nowhere:1", no_such_name)
    with pytest.raises(ActionError, match="not host:port"):
        resolve_endpoint("nohost", fake)


def test_rebind_sets_interface_and_forwarded_port_with_new_sockets():
    calls = []
    d, qbt, wg, _ = make()
    d.rem.config = config_mod.parse("[qbittorrent]\nforwarded_port = 47000\n")
    real = qbt.set_binding
    qbt.set_binding = lambda iface, port: calls.append((iface, port)) or real(iface, port)
    d.cycle(bind="wrong_interface")
    v = d.cycle(bind="wrong_interface")
    # To a neighbour and back: libtorrent opens sockets only for a changed port.
    assert calls == [("wg0", 47001), ("wg0", 47000)]
    assert qbt.calls[-1] == "reannounce"
    assert v.actions_total["rebind"] == 1 and v.state == "holding"


def test_rebind_without_forwarded_port_keeps_qbittorrents_own_port():
    d, qbt, wg, _ = make()
    qbt.port = 65535
    calls = []
    real = qbt.set_binding
    qbt.set_binding = lambda iface, port: calls.append(port) or real(iface, port)
    d.cycle(bind="stale_listener")
    v = d.cycle(bind="stale_listener")
    assert calls == [65534, 65535] and v.actions_total["rebind"] == 1
    assert v.state == "ok"  # stale_listener is fixed by the rebind, not by holding


def test_rebind_that_opens_no_socket_fails_with_why():
    from qbt_vpn_watchdog.actions import rebind

    class Deaf(ModelLinks):
        def tcp_listeners(self, port):
            return (Listener("10.64.1.2", port, 3),)  # still on the old index

    qbt = ModelQbt(1)
    with pytest.raises(ActionError, match="no socket on wg0 port 51414 within 0.3 s"):
        rebind(qbt, Deaf(qbt), "wg0", 51413, timeout=0.3, poll=0.05)
    with pytest.raises(ActionError, match="wg9 does not exist"):
        rebind(qbt, ModelLinks(qbt), "wg9", 51413, timeout=0.3)


class Sticky(ModelQbt):
    """libtorrent's rule: sockets are opened anew only for a changed port; until then
    they stay on the index of the link they were opened on (3: the old tunnel)."""

    def __init__(self, port: int) -> None:
        super().__init__(1)
        self.port, self.index, self.asked = port, 3, []

    def set_binding(self, interface, port):
        self.asked.append(port)
        if port != self.port:
            self.port, self.index = port, 5


class StickyLinks:
    def __init__(self, qbt: Sticky, others: tuple[int, ...] = ()) -> None:
        self.qbt, self.wg0, self.others = qbt, ModelLinks(qbt).link("wg0"), others

    def link(self, name):
        return self.wg0 if name == "wg0" else None

    def tcp_listeners(self, port):
        if port in self.others:  # another program's socket: qBittorrent cannot listen there
            return (Listener("0.0.0.0", port, 0),)
        return (Listener("10.64.1.2", port, self.qbt.index),) if port == self.qbt.port else ()


@pytest.mark.parametrize("now", [51414, 51412, 51413, 60000])
def test_rebind_never_uses_the_port_qbittorrent_has_as_the_neighbour(now):
    # A rebind interrupted between its two steps (the daemon restarted) leaves
    # qBittorrent on the neighbour port; the next rebind's first step would be
    # a no-op there and wait for a socket that never comes (the lab's
    # "no socket on qvlc0 port 47124 within 15 s").
    from qbt_vpn_watchdog.actions import rebind

    qbt = Sticky(now)
    out = rebind(qbt, StickyLinks(qbt), "wg0", 51413, timeout=0.5, poll=0.01)
    assert qbt.asked[0] not in (now, 51413) and qbt.asked[-1] == 51413
    assert (qbt.port, qbt.index) == (51413, 5), qbt.asked
    assert "port 51413" in out and qbt.calls[-1] == "reannounce"


def test_rebind_steps_around_a_neighbour_another_program_listens_on():
    from qbt_vpn_watchdog.actions import rebind

    qbt = Sticky(51413)
    rebind(qbt, StickyLinks(qbt, others=(51414,)), "wg0", 51413, timeout=0.5, poll=0.01)
    assert qbt.asked == [51412, 51413] and qbt.index == 5


def test_rebind_with_no_port_anywhere_refuses_instead_of_moving_qbittorrent_to_port_1():
    from qbt_vpn_watchdog.actions import rebind

    qbt = Sticky(0)  # qBittorrent says listen_port 0; no forwarded port configured
    with pytest.raises(ActionError, match=r"no port \(0\) and qbittorrent.forwarded_port is not set"):
        rebind(qbt, StickyLinks(qbt), "wg0", None, timeout=0.3, poll=0.01)
    assert qbt.asked == []


def test_rebind_to_the_forwarded_port_goes_on_when_qbittorrents_state_cannot_be_read():
    from qbt_vpn_watchdog.actions import rebind

    class Unreadable(Sticky):
        def state(self):
            raise SourceError("app/preferences: not JSON", kind="bad_response")

    qbt = Unreadable(51413)
    rebind(qbt, StickyLinks(qbt), "wg0", 51413, timeout=0.5, poll=0.01)
    assert qbt.asked == [51414, 51413] and qbt.index == 5
    with pytest.raises(SourceError):  # without a forwarded port, its own port is needed
        rebind(Unreadable(51413), StickyLinks(qbt), "wg0", None, timeout=0.3)


def test_rebind_neighbours_stay_unprivileged_where_they_can():
    from qbt_vpn_watchdog.actions import rebind

    qbt = Sticky(1024)
    rebind(qbt, StickyLinks(qbt, others=(1025,)), "wg0", None, timeout=0.5, poll=0.01)
    assert qbt.asked == [1026, 1024]  # not 1023: a port only root may open


def test_rebind_of_qbittorrents_own_port_at_the_top_of_the_range():
    from qbt_vpn_watchdog.actions import rebind

    qbt = Sticky(65535)
    rebind(qbt, StickyLinks(qbt), "wg0", None, timeout=0.5, poll=0.01)
    assert qbt.asked == [65534, 65535] and qbt.index == 5


# --- the tag is the memory ---------------------------------------------------------------


def test_a_new_remediator_keeps_tagged_torrents_stopped_and_resumes_them_later():
    d, qbt, wg, _ = make()
    d.cycle(**BAD)
    d.cycle(**BAD)
    assert qbt.held("watchdog-stopped") == ["t0", "t1", "t2"]
    # The watchdog restarts: a fresh Remediator, same qBittorrent.
    rem2 = Remediator(
        cfg(), Srcs(qbt, ModelWg()), rng=random.Random(1), specs=SPECS, resolve=lambda e: e
    )
    d2 = Driver(rem2, d.t)
    v = d2.cycle()
    assert v.state == "holding" and v.held_stopped == 3 and "start_tagged" not in qbt.calls
    d2.cycle()
    v = d2.cycle()
    assert v.state == "ok" and qbt.calls[-1] == "start_tagged" and not any(qbt.paused.values())


def test_qbittorrent_down_at_start_then_back():
    d, qbt, wg, _ = make()
    for h in qbt.paused:
        qbt.paused[h] = True
        qbt.tags[h].add("watchdog-stopped")
    qbt.down = True
    for _ in range(4):
        v = d.cycle(bind="unreachable")
        assert v.state == "ok"  # nothing known, nothing to do, nothing started
    qbt.down = False
    v = d.cycle()
    assert v.state == "holding" and v.held_stopped == 3  # adopted from the tag
    d.cycle()
    v = d.cycle()
    assert v.state == "ok" and not any(qbt.paused.values())


# --- failures: counted, logged once, fed back -------------------------------------------


def test_stop_failure_is_retried_each_cycle_and_logged_once(caplog):
    d, qbt, wg, _ = make()
    qbt.down = True
    caplog.set_level(logging.ERROR, "qbt_vpn_watchdog.actions")
    d.cycle(**BAD)
    d.cycle(**BAD)
    d.cycle(**BAD)
    v = d.cycle(**BAD)
    assert v.failures_total["stop_torrents"] == 3
    assert [r.message for r in caplog.records if "stop_torrents failed" in r.message] == [
        "remediation: stop_torrents failed: connection refused"
    ]
    qbt.down = False
    v = d.cycle(**BAD)
    # Attempts count the failed ones: 3 failed + 1 that worked.
    assert v.actions_total["stop_torrents"] == 4 and v.held_stopped == 3
    assert v.failures_total["stop_torrents"] == 3


def test_login_failure_is_never_retried():
    d, qbt, wg, _ = make()
    calls = []

    def refuse(tag):
        calls.append(tag)
        raise SourceError("qBittorrent refused the login", kind="login")

    qbt.stop_active = refuse
    d.cycle(**BAD)
    for _ in range(20):
        v = d.cycle(**BAD)
    assert len(calls) == 1 and v.failures_total["stop_torrents"] == 1
    assert v.state in ("restarting", "gave_up")


def test_resume_failure_keeps_holding_and_retries():
    d, qbt, wg, _ = make()
    d.cycle(**BAD)
    d.cycle(**BAD)
    qbt.down = True
    for _ in range(3):
        v = d.cycle(bind="unreachable")
    assert v.state != "ok"
    # qBittorrent answers the checks but the start itself fails once.
    qbt.down = False
    real = qbt.start_tagged
    fails = iter([True])

    def flaky(tag):
        if next(fails, False):
            raise SourceError("torrent(s) still stopped", kind="not_started")
        return real(tag)

    qbt.start_tagged = flaky
    states = [d.cycle().state for _ in range(4)]
    assert states == ["holding", "holding", "holding", "ok"]
    assert d.rem.view.failures_total["resume_torrents"] == 1
    assert not any(qbt.paused.values())


def test_failing_resumes_keep_this_cycle_s_memory_so_rebind_keeps_its_back_off():
    # Holding after a return-path incident; qBittorrent's socket is stale (a
    # rebind's job, degraded: cycles are good) and every resume fails. The
    # memory of the cycle that tried to resume must keep what decide recorded
    # (the rebind's time): rebinds stay one per restart_backoff_max, not one a cycle.
    d, qbt, wg, _ = make("restart_backoff_max = 600.0\n")
    d.cycle(**BAD)
    d.cycle(**BAD)
    rebinds = []
    real = qbt.set_binding
    qbt.set_binding = lambda iface, port: rebinds.append(d.t) or real(iface, port)

    def refused(tag):
        raise SourceError("torrent(s) still stopped", kind="not_started")

    qbt.start_tagged = refused
    d.cycle()  # good cycle 1 of 3; bind's second stale_listener comes with the third
    states = [d.cycle(bind="stale_listener").state for _ in range(12)]  # 120 s < 600 s
    assert set(states) == {"holding"}
    assert d.rem.view.failures_total["resume_torrents"] >= 5
    assert len({t for t in rebinds}) == 1, f"rebinds at {sorted(set(rebinds))}"


def test_a_hung_action_times_out_and_counts_as_failed():
    d, qbt, wg, _ = make("action_timeout = 0.3\n")

    def hang(tag):
        time.sleep(2)
        return []

    qbt.stop_active = hang
    d.cycle(**BAD)
    t0 = time.monotonic()
    v = d.cycle(**BAD)
    assert time.monotonic() - t0 < 1.5
    assert v.failures_total["stop_torrents"] == 1
    # While the hung call is still running, the same action is refused, not stacked.
    v = d.cycle(**BAD)
    assert v.failures_total["stop_torrents"] == 2


# --- observe mode ------------------------------------------------------------------------


def test_observe_mode_says_what_it_would_do(caplog):
    d, qbt, wg, commands = make(mode="observe")
    caplog.set_level(logging.WARNING, "qbt_vpn_watchdog.actions")
    d.cycle(**BAD)
    v = d.cycle(**BAD)
    assert v.observe_only and v.state == "restarting" and v.held_stopped == 0
    assert "would stop 3 torrent(s): t0, t1, t2" in v.summary
    assert "would restart_tunnel tier 1" in v.summary
    lines = [r.message for r in caplog.records]
    assert any(m.startswith("observe mode: would stop 3 torrent(s): t0, t1, t2") for m in lines)
    d.cycle(**BAD)
    assert sum("would stop" in m for m in (r.message for r in caplog.records)) == 1  # once
    assert qbt.calls == [] and wg.calls == [] and commands == []


@pytest.mark.parametrize("drift", [False, True])
def test_observe_mode_would_stop_what_the_adapter_stops(monkeypatch, drift):
    # "would stop N" counts by the adapter's own definition of an active
    # torrent (the one stop_active uses), whatever that definition becomes.
    from qbt_vpn_watchdog.metrics import QBT_TORRENT_STATES
    from qbt_vpn_watchdog.sources import TorrentBrief
    from qbt_vpn_watchdog.sources.qbittorrent import torrents as adapter  # where is_active reads it

    if drift:  # qBittorrent grows a state that is not active
        monkeypatch.setattr(adapter, "NOT_ACTIVE_STATES", adapter.NOT_ACTIVE_STATES | {"queuedDL"})
    d, qbt, wg, _ = make(mode="observe")
    everything = tuple(TorrentBrief(st, st, st, ()) for st in QBT_TORRENT_STATES)
    qbt.state = lambda: dataclasses.replace(ModelQbt(0).state(), torrents=everything)
    d.cycle(**BAD)
    v = d.cycle(**BAD)
    want = [st for st in QBT_TORRENT_STATES if st not in adapter.NOT_ACTIVE_STATES]
    assert f"would stop {len(want)} torrent(s): {', '.join(want[:5])} ..." in v.summary


def test_reconfigure_keeps_memory():
    d, qbt, wg, _ = make()
    d.cycle(**BAD)
    d.cycle(**BAD)
    d.rem.reconfigure(cfg("stop_torrents = true\n", mode="observe"), Srcs(qbt, wg))
    assert d.rem.memory.holding and d.cycle().observe_only


# --- the restart command: a real process -------------------------------------------------


def script(tmp_path: Path, body: str) -> str:
    p = tmp_path / "cmd.sh"
    p.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    p.chmod(0o755)
    return str(p)


def test_command_gets_argv_verbatim_no_shell(tmp_path):
    out = tmp_path / "argv"
    cmd = script(tmp_path, f'for a in "$@"; do printf "%s\\n" "$a"; done > {out}\n')
    args = ["restart tunnel", f"$(touch {tmp_path}/pwned)", "a;b", "*"]
    run_command([cmd, *args], timeout=5)
    assert out.read_text().splitlines() == args
    assert not (tmp_path / "pwned").exists()


def test_command_nonzero_exit_is_a_failure_with_its_last_line(tmp_path):
    cmd = script(tmp_path, "echo starting\necho 'unit wg0 not found' >&2\nexit 3\n")
    with pytest.raises(ActionError, match=r"exited with status 3: unit wg0 not found"):
        run_command([cmd], timeout=5)


def test_command_missing_binary(tmp_path):
    with pytest.raises(ActionError, match="cannot run"):
        run_command([str(tmp_path / "nope")], timeout=5)


def test_hung_command_is_killed_with_its_children(tmp_path):
    pidfile = tmp_path / "child.pid"
    cmd = script(tmp_path, f"sleep 300 &\necho $! > {pidfile}\nwait\n")
    t0 = time.monotonic()
    with pytest.raises(ActionError, match="did not finish within 0.5 s; killed"):
        run_command([cmd], timeout=0.5)
    assert time.monotonic() - t0 < 3
    child = int(pidfile.read_text())
    for _ in range(50):  # reaped by init; give it a moment
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the command's child survived the timeout")


def test_remediator_counts_a_failing_restart_command(tmp_path):
    cmd = script(tmp_path, "exit 1\n")
    d, qbt, wg, _ = make(
        f"""
        restart_command = ["{cmd}"]
        restart_backoff_initial = 1.0
        restart_backoff_max = 1.0
        action_timeout = 5.0
        """,
        run_command=run_command,
    )
    for _ in range(4):
        v = d.cycle(**BAD)
    assert v.actions_total["restart_tunnel"] == 2  # tier 1 worked, tier 2 was attempted
    assert v.failures_total["restart_tunnel"] == 1  # tier 2 exited 1 (twice: run again once)


# --- tier 1 against a real wireguard-go ---------------------------------------------------

NS = unique("qvr-wg")
IFACE = f"qvr{SESSION}0"  # wireguard-go's UAPI socket path is machine-wide


@pytest.fixture
def wireguard_go():
    if os.geteuid() != 0 or not shutil.which("wireguard-go") or not shutil.which("wg"):
        pytest.skip("needs root, wireguard-go and wg")
    subprocess.run(["ip", "netns", "add", NS], check=True)
    proc = None
    try:
        # An isolated namespace (only lo): whatever wireguard-go sends goes nowhere.
        proc = subprocess.Popen(
            ["ip", "netns", "exec", NS, "wireguard-go", "-f", IFACE],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sock = Path(f"/var/run/wireguard/{IFACE}.sock")
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        key = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout
        peer_priv = subprocess.run(
            ["wg", "genkey"], capture_output=True, text=True, check=True
        ).stdout
        peer = subprocess.run(
            ["wg", "pubkey"], input=peer_priv, capture_output=True, text=True, check=True
        ).stdout.strip()
        kf = Path(f"/tmp/{IFACE}.key")
        kf.write_text(key)
        kf.chmod(0o600)
        subprocess.run(
            ["wg", "set", IFACE, "private-key", str(kf), "peer", peer,
             "endpoint", "192.0.2.1:1637", "allowed-ips", "0.0.0.0/0"],
            check=True,
        )  # fmt: skip
        kf.unlink()
        yield peer
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(["ip", "netns", "del", NS], check=False)
        Path(f"/var/run/wireguard/{IFACE}.sock").unlink(missing_ok=True)


@pytest.mark.root
def test_tier1_resets_the_endpoint_of_a_real_wireguard_go(wireguard_go):
    from qbt_vpn_watchdog.sources.wireguard import UapiReader

    qbt = ModelQbt(1)
    config = config_mod.parse(
        f'[wireguard]\ninterface = "{IFACE}"\n[remediation]\nendpoint = "127.0.0.1:51999"\n'
    )
    rem = Remediator(config, Srcs(qbt, UapiReader(IFACE)), rng=random.Random(0), specs=SPECS)
    d = Driver(rem)
    d.cycle(**BAD)
    v = d.cycle(**BAD)
    assert v.actions_total["restart_tunnel"] == 1, v
    shown = subprocess.run(["wg", "show", IFACE, "endpoints"], capture_output=True, text=True)
    assert shown.stdout.split() == [wireguard_go, "127.0.0.1:51999"]


def test_a_failing_restart_command_runs_once_more_then_fails(tmp_path):
    runs = tmp_path / "runs"
    cmd = script(tmp_path, f"echo x >> {runs}\n[ $(wc -l < {runs}) -ge 2 ] && exit 0\nexit 1\n")
    slept = []
    assert run_retrying(run_command, [cmd], 10, sleep=slept.append) == ""
    assert runs.read_text().count("x") == 2 and slept == [1.0]
    always = script(tmp_path, "echo 'job canceled' >&2\nexit 1\n")
    with pytest.raises(ActionError, match="exited with status 1: job canceled"):
        run_retrying(run_command, [always], 10, sleep=slept.append)
    assert slept == [1.0, 1.0]  # two runs, one wait between them


def test_a_hung_or_missing_restart_command_is_not_run_again(tmp_path):
    calls = []

    def hung(argv, timeout):
        calls.append(timeout)
        raise ActionError(f"{argv[0]} did not finish within {timeout:g} s; killed")

    with pytest.raises(ActionError, match="killed"):
        run_retrying(hung, ["x"], 5, sleep=lambda s: None)
    assert len(calls) == 1
    with pytest.raises(ActionError, match="cannot run"):
        run_retrying(run_command, [str(tmp_path / "nope")], 5, sleep=lambda s: None)


def test_after_qbittorrent_gave_no_answer_its_other_actions_wait_for_the_next_cycle():
    # A hung qBittorrent: every call runs into its timeout. The stop is tried
    # (it comes first), the rebind of the same cycle is not: the cycle keeps its pace.
    from qbt_vpn_watchdog.policy import Action

    d, qbt, wg, commands = make()
    rem = d.rem
    tried: list[str] = []
    do = rem._do
    rem._do = lambda a: tried.append(a.kind) or do(a)
    qbt.down = True
    rem._qbt_silent = ""
    assert rem._perform(Action("stop_torrents", "unsafe"), 1000.0) is False
    assert rem._perform(Action("rebind", "bind unbound x2"), 1000.0) is False
    assert tried == ["stop_torrents"]
    assert rem.failures_total["stop_torrents"] == 1 and rem.failures_total["rebind"] == 0
    qbt.down = False
    d.cycle()  # a new cycle: tried again
    rem._qbt_silent = ""
    assert rem._perform(Action("stop_torrents", "unsafe"), 1010.0) is True


def test_an_uncaught_error_in_a_restart_still_counts_it_in_the_memory():
    # The tunnel restart was decided and sent, then raised what no handler expects
    # (a library error halfway through): the daemon logs the bug and goes on. The
    # attempt must still count towards the back-off and the hourly cap, or every
    # following cycle restarts the tunnel again.
    d, qbt, wg, _ = make()
    d.cycle(**BAD)
    sent = []

    def half_done(public_key: str, endpoint: str) -> None:
        sent.append(endpoint)
        raise RuntimeError("a bug halfway through a restart")

    wg.set_endpoint = half_done
    with pytest.raises(RuntimeError):
        d.cycle(**BAD)
    mem = d.rem.memory
    assert mem.holding and mem.attempts == 1 and len(mem.restarts) == 1
    assert mem.next_restart > d.t  # backing off
    d.cycle(**BAD)  # within the back-off: no second restart
    assert len(sent) == 1


def test_an_uncaught_error_in_a_resume_keeps_the_incident_open():
    d, qbt, wg, _ = make()
    d.cycle(**BAD)
    d.cycle(**BAD)  # stopped and holding
    d.cycle()
    d.cycle()

    def broken(tag):
        raise RuntimeError("a bug in the resume")

    qbt.start_tagged = broken
    with pytest.raises(RuntimeError):
        d.cycle()  # the third good cycle: resume
    assert d.rem.memory.holding  # tried again next cycle, never forgotten
    del qbt.start_tagged
    v = d.cycle()
    assert v.state == "ok" and qbt.paused == dict.fromkeys(qbt.paused, False)
