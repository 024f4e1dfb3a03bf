"""Remediation end to end in the lab: the real daemon, the real qbittorrent-nox,
a real download through the real (userspace) WireGuard tunnel, real faults.

Each test starts ``qbt-vpn-watchdog run`` as a subprocess against the lab's
config (with remediation tuned for test time: short back-off, small cap), and
watches the result through qBittorrent's own API and the daemon's /metrics
(on loopback).

The torrents: the lab's test torrent, rate-limited so that it is still
downloading when the fault hits; an unseeded torrent that sits active
(stalled); and one the *user* stopped before the fault, which must still be
stopped, and untagged, after recovery.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from qbt_vpn_watchdog.sources.qbittorrent import STOPPED_STATES
from tests.support.daemon_proc import WatchdogProc
from tests.support.lab_load import scrape
from tests.support.monitoring import free_port
from tests.support.procs import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.qbittorrent]

TAG = "watchdog-stopped"
STOPPED = STOPPED_STATES  # the adapter's: paused* on 4.5, stopped* on 5.1
SLOW = 48 * 1024  # bytes/s: the 4 MiB test torrent takes ~85 s, so it is mid-way at the fault



def lab_watchdog_config(lab_config: Path, out: Path, port: int, **remediation) -> Path:
    """The lab's generated config with our metrics port and remediation settings."""
    from qbt_vpn_watchdog.lab import control

    text = lab_config.read_text()
    # Drop the lab's own [remediation] table (we write a complete one below).
    text = re.sub(r"(?ms)^\[remediation\]\n.*?(?=^\[|\Z)", "", text)
    text = re.sub(r"(?m)^listen_port = \d+$", f"listen_port = {port}", text)
    rem = {
        "restart_command": control.restart_command(),
        "restart_backoff_initial": 4.0,
        "restart_backoff_max": 16.0,
        "max_restarts_per_hour": 6,
        "action_timeout": 25.0,
        **remediation,
    }
    lines = ["", "[remediation]"]
    for k, v in rem.items():
        if isinstance(v, list):
            lines.append(f"{k} = [" + ", ".join(f'"{x}"' for x in v) + "]")
        elif isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        else:
            lines.append(f"{k} = {v!r}")
    out.write_text(text + "\n".join(lines) + "\n")
    return out


class Watchdog:
    """The daemon as a child process (stop() and start() again: a fresh process), and
    what the scenarios read from its /metrics."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: WatchdogProc | None = None

    def start(self) -> Watchdog:
        self.proc = WatchdogProc(self.config, self.port, self.log).started(30)
        return self

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is not None:
            p.stop()

    def metrics(self) -> dict[str, dict[str, float]]:
        """{name: {labels: value}}; {} when the daemon does not answer (yet)."""
        return scrape(self.port)

    def state(self) -> str | None:
        for labels, v in self.metrics().get("qbtvpn_remediation_state", {}).items():
            if v == 1:
                return labels.split('"')[1]
        return None

    def count(self, family: str, action: str) -> float:
        return self.metrics().get(family, {}).get(f'action="{action}"', 0.0)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


# --- torrents ---------------------------------------------------------------------------


def make_torrent(tmp: Path, name: str, size: int = 256 * 1024) -> Path:
    from qbt_vpn_watchdog.lab import topology as t

    data = tmp / name
    data.write_bytes(os.urandom(size))
    out = tmp / f"{name}.torrent"
    subprocess.run(
        ["mktorrent", "-p", "-a", f"http://{t.SEEDER_IP}:{t.TRACKER_PORT}/announce",
         "-l", "16", "-o", str(out), str(data)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


class Torrents:
    """The three torrents of a scenario, by role, with qBittorrent's view of them."""

    def __init__(self, lab, tmp: Path) -> None:
        from qbt_vpn_watchdog.lab import services

        self.c = lab.qbt()
        self.save = services.CLIENT_DOWNLOADS / "qvr"
        c = self.c
        c.torrents_delete(delete_files=True, torrent_hashes="all")
        wait_for("an empty client", lambda: not c.torrents_info(), 10)
        c.torrents_add(torrent_files=str(services.TORRENT_FILE), save_path=str(self.save),
                       download_limit=SLOW)  # fmt: skip
        c.torrents_add(
            torrent_files=str(make_torrent(tmp, "qvr-idle.bin")), save_path=str(self.save)
        )
        c.torrents_add(
            torrent_files=str(make_torrent(tmp, "qvr-user.bin")), save_path=str(self.save)
        )
        by_name = wait_for(
            "three torrents", lambda: self._names() if len(self._names()) == 3 else None, 15
        )
        self.download = by_name[services.TORRENT_NAME]
        self.idle = by_name["qvr-idle.bin"]
        self.user = by_name["qvr-user.bin"]
        c.torrents_stop(torrent_hashes=self.user)  # the user stops this one before any fault
        wait_for("the user's stop", lambda: self.info(self.user).state in STOPPED, 15)
        self.seed_file = services.SEED_DATA / services.TORRENT_NAME
        self.got_file = self.save / services.TORRENT_NAME

    def _names(self) -> dict[str, str]:
        return {t.name: t.hash for t in self.c.torrents_info()}

    def info(self, h: str):
        return self.c.torrents_info(torrent_hashes=h)[0]

    def tags(self, h: str) -> set[str]:
        return {x.strip() for x in (self.info(h).tags or "").split(",") if x.strip()}

    @property
    def ours(self) -> list[str]:
        return [self.download, self.idle]

    def all_held(self) -> bool:
        return all(self.info(h).state in STOPPED and TAG in self.tags(h) for h in self.ours)

    def all_resumed(self) -> bool:
        return all(self.info(h).state not in STOPPED and TAG not in self.tags(h) for h in self.ours)

    def user_untouched(self) -> bool:
        return self.info(self.user).state in STOPPED and TAG not in self.tags(self.user)

    def progress(self) -> float:
        return self.info(self.download).progress

    def wait_progress(self, timeout: float = 90) -> None:
        """The download moving. After a scenario that restarted the tunnel many times (the
        cap test) the seeder may take a while to take the client back: ask the tracker
        again at once rather than waiting for qBittorrent's own re-announce."""
        p0 = self.progress()
        self.c.torrents_reannounce(torrent_hashes=self.download)
        wait_for("the download to progress", lambda: self.progress() > p0, timeout)

    def finish_download(self, timeout: float = 90) -> None:
        self.c.torrents_set_download_limit(limit=0, torrent_hashes=self.download)
        try:
            wait_for(
                "the download to complete",
                lambda: self.info(self.download).amount_left == 0,
                timeout,
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.describe(self.download)}") from None
        assert self.got_file.read_bytes() == self.seed_file.read_bytes()

    def describe(self, h: str) -> str:
        """What qBittorrent says about a torrent, its trackers and peers (for failures)."""
        t = self.info(h)
        lines = [
            f"{t.name}: state {t.state}, progress {t.progress:.3f}, dlspeed {t.dlspeed}, "
            f"seeds {t.num_seeds}/{t.num_complete}, peers {t.num_leechs}"
        ]
        for tr in self.c.torrents_trackers(torrent_hash=h):
            lines.append(f"  tracker {tr.url}: status {tr.status} peers {tr.num_peers} {tr.msg!r}")
        peers = self.c.sync_torrent_peers(torrent_hash=h).get("peers", {})
        for addr, p in peers.items():
            lines.append(f"  peer {addr}: {p.get('connection')} {p.get('flags')} "
                         f"progress {p.get('progress')} dl {p.get('dl_speed')}")  # fmt: skip
        return "\n".join(lines)

    def cleanup(self) -> None:
        try:
            self.c.torrents_delete(delete_files=True, torrent_hashes="all")
        except Exception:  # noqa: BLE001 - best effort after a failure
            pass


@pytest.fixture
def scenario(healed_lab, tmp_path):
    """(lab, torrents, make_watchdog(**remediation)); stops every watchdog afterwards."""
    lab = healed_lab
    torrents = Torrents(lab, tmp_path)
    started: list[Watchdog] = []

    def make(**remediation) -> Watchdog:
        port = free_port()
        cfg = lab_watchdog_config(lab.config_path, tmp_path / "watchdog.toml", port, **remediation)
        w = Watchdog(cfg, port, tmp_path / "watchdog.log")
        started.append(w)
        return w

    try:
        yield lab, torrents, make
    finally:
        for w in started:
            w.stop()
        for w in started[:1]:
            print(w.log_text()[-6000:])
        torrents.cleanup()


def held_after(lab, torrents: Torrents, w: Watchdog, fault: str) -> float:
    """The watchdog ok and the download running, then ``fault``: returns the seconds until
    our torrents are stopped and tagged (the user's torrent untouched)."""
    wait_for("remediation ok", lambda: w.state() == "ok", 30)
    torrents.wait_progress()
    assert torrents.progress() < 0.9, "the download should still be running at the fault"
    assert torrents.info(torrents.idle).state not in STOPPED
    lab.break_(fault)
    t_fault = time.monotonic()
    wait_for("torrents stopped and tagged", torrents.all_held, 60)
    assert torrents.user_untouched()
    return time.monotonic() - t_fault


# --- the scenarios ----------------------------------------------------------------------------


def test_return_path_stop_restart_heal_resume(scenario):
    lab, torrents, make = scenario
    w = make().start()
    fault_to_stopped = held_after(lab, torrents, w, "return-path")
    wait_for(
        "a tunnel restart", lambda: w.count("qbtvpn_remediations_total", "restart_tunnel") >= 1, 30
    )
    assert w.state() in ("restarting", "holding", "gave_up")
    assert w.metrics()["qbtvpn_torrents_held_stopped"][""] == 2
    lab.heal("return-path")
    t_heal = time.monotonic()
    wait_for("torrents resumed", torrents.all_resumed, 90)
    t_resumed = time.monotonic()
    wait_for("remediation ok", lambda: w.state() == "ok", 30)
    assert torrents.user_untouched()
    torrents.finish_download()
    print(f"fault->stopped {fault_to_stopped:.1f} s, heal->resumed {t_resumed - t_heal:.1f} s")


def no_ipv6_route(lab, torrents: Torrents) -> None:
    from qbt_vpn_watchdog.lab import topology as t

    routes = lab.exec_in(t.NS_VPN, ["ip", "-6", "route", "show", "table", "all"]).stdout
    assert routes.strip() == ""


def killswitch_whole(lab, torrents: Torrents) -> None:
    from qbt_vpn_watchdog.lab import topology as t

    rules = lab.exec_in(t.NS_VPN, ["nft", "list", "ruleset"]).stdout
    assert f"table inet {t.KILLSWITCH_TABLE}" in rules and "qvl-fault" not in rules


def bound_to_the_tunnel(lab, torrents: Torrents) -> None:
    from qbt_vpn_watchdog.lab import topology as t

    assert torrents.c.app_preferences()["current_network_interface"] == t.WG_CLIENT


@pytest.mark.parametrize(
    ("fault", "resumed_within", "action", "then"),
    [
        # Tier 1 cannot reach a dead wireguard-go, tier 2 (the lab's
        # restart-tunnel, what systemd would do) brings the tunnel back.
        pytest.param("tunnel-down", 120, "restart_tunnel", None, id="tunnel-down"),
        # The tunnel's restart (the script's restart-tunnel) turns IPv6 off in
        # the namespace again, which takes the address and routes with it, and
        # re-installs the kill switch, which takes the rule letting IPv6 out.
        pytest.param("ipv6-open", 120, "restart_tunnel", no_ipv6_route, id="ipv6-open"),
        # The same restart re-installs a removed or loosened kill switch.
        pytest.param("killswitch", 120, "restart_tunnel", killswitch_whole, id="killswitch"),
        pytest.param(
            "killswitch-open", 120, "restart_tunnel", killswitch_whole, id="killswitch-open"
        ),
        # The rebind sets the tunnel interface back, then the hold is released.
        pytest.param("bind", 90, "rebind", bound_to_the_tunnel, id="bind"),
    ],
)
def test_fixed_by_the_watchdog_alone(scenario, fault, resumed_within, action, then):
    """No heal: the watchdog's own ``action`` repairs the fault and releases the hold."""
    lab, torrents, make = scenario
    w = make().start()
    held_after(lab, torrents, w, fault)
    wait_for("torrents resumed", torrents.all_resumed, resumed_within)
    if then is not None:
        then(lab, torrents)
    assert w.count("qbtvpn_remediations_total", action) >= 1
    assert torrents.user_untouched()
    torrents.finish_download()


def test_watchdog_restart_mid_incident_keeps_torrents_stopped(scenario):
    lab, torrents, make = scenario
    w = make().start()
    held_after(lab, torrents, w, "return-path")
    w.stop()
    # A fresh process: it knows nothing but the tag.
    w.start()
    wait_for(
        "the new watchdog to hold", lambda: w.state() in ("holding", "restarting", "gave_up"), 30
    )
    for _ in range(8):  # several cycles: still held
        assert torrents.all_held() and torrents.user_untouched()
        time.sleep(1)
    assert w.metrics()["qbtvpn_torrents_held_stopped"][""] == 2
    lab.heal("return-path")
    wait_for("torrents resumed", torrents.all_resumed, 90)
    assert torrents.user_untouched()
    torrents.finish_download()


def test_never_healed_stays_within_the_cap_and_gives_up(scenario):
    lab, torrents, make = scenario
    w = make(max_restarts_per_hour=2, restart_backoff_initial=2.0, restart_backoff_max=4.0).start()
    held_after(lab, torrents, w, "return-path")
    wait_for("gave_up", lambda: w.state() == "gave_up", 120, step=0.5)
    restarts = w.count("qbtvpn_remediations_total", "restart_tunnel") + w.count(
        "qbtvpn_remediation_failures_total", "restart_tunnel"
    )
    assert restarts == 2
    for _ in range(10):  # keeps checking, keeps holding, never restarts again
        assert torrents.all_held() and w.state() == "gave_up"
        time.sleep(1)
    assert (
        w.count("qbtvpn_remediations_total", "restart_tunnel")
        + w.count("qbtvpn_remediation_failures_total", "restart_tunnel")
        == 2
    )
    # Recovery by other means is still noticed.
    lab.heal("return-path")
    wait_for("torrents resumed", torrents.all_resumed, 90)
    wait_for("remediation ok", lambda: w.state() == "ok", 30)
    assert torrents.user_untouched()


def test_ipv6_on_the_lan_side_with_the_kill_switch_in_place_is_not_remediated(healed_lab, tmp_path):
    """#21: a ULA address (and a default route) on the LAN veth while the kill switch drops
    IPv6: reported (route_contained, degraded), never acted on, in enforce mode."""
    lab = healed_lab
    port = free_port()
    w = Watchdog(lab_watchdog_config(lab.config_path, tmp_path / "w.toml", port), port,
                 tmp_path / "w.log")  # fmt: skip
    w.start()
    try:
        wait_for("remediation ok", lambda: w.state() == "ok", 30)
        lab.break_("ipv6")
        reason = 'check="ipv6",reason="route_contained"'
        wait_for("ipv6 route_contained", lambda: w.metrics()["qbtvpn_check_reason"].get(reason), 20)
        time.sleep(10)  # 5 more cycles at the lab's 2 s: fail_after is 2
        m = w.metrics()
        assert m["qbtvpn_check_reason"][reason] == 1
        assert m["qbtvpn_check_reason"]['check="killswitch",reason="ok"'] == 1
        assert w.state() == "ok"
        assert sum(m.get("qbtvpn_remediations_total", {}).values()) == 0
        assert m["qbtvpn_torrents_held_stopped"][""] == 0
    finally:
        w.stop()


class Usage:
    """Samples a process's file descriptors, threads and RSS every ``step`` seconds (max kept)."""

    def __init__(self, pid: int, step: float = 0.5) -> None:
        import threading

        self.pid, self.step = pid, step
        self.fds = self.threads = self.rss_kib = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(self.step):
            try:
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            self.fds = max(self.fds, fds)
            self.threads = max(self.threads, int(fields["Threads"]))
            self.rss_kib = max(self.rss_kib, int(fields["VmHWM"].split()[0]))

    def stop(self) -> str:
        self._stop.set()
        self._t.join(2)
        return f"peak fds {self.fds}, threads {self.threads}, RSS {self.rss_kib / 1024:.0f} MiB"


def test_qbittorrent_hung_during_the_92_byte_failure_stopped_once_it_answers(scenario):
    """qBittorrent SIGSTOPped as the 92-byte failure starts: no torrent can be stopped
    through its WebUI, the loop keeps its cycle (every call ends by its timeout), and the
    torrents are stopped within 30 s of qBittorrent answering again."""
    from qbt_vpn_watchdog.lab import procs

    lab, torrents, make = scenario
    w = make().start()
    usage = Usage(w.proc.p.pid)
    wait_for("remediation ok", lambda: w.state() == "ok", 30)
    torrents.wait_progress()
    qbt = procs.running("client-qbt")
    assert qbt is not None
    lab.break_("return-path")
    os.killpg(qbt, signal.SIGSTOP)
    try:
        cycles0 = w.metrics()["qbtvpn_cycles_total"][""]
        hung_for = 40.0
        time.sleep(hung_for)
        m = w.metrics()
        cycles = m["qbtvpn_cycles_total"][""] - cycles0
        state = w.state()
        stop_failures = w.count("qbtvpn_remediation_failures_total", "stop_torrents")
    finally:
        os.killpg(qbt, signal.SIGCONT)
    t_answer = time.monotonic()
    wait_for("torrents stopped and tagged", torrents.all_held, 60)
    stopped_after = time.monotonic() - t_answer
    print(
        f"qBittorrent hung {hung_for:.0f} s: {cycles:.0f} cycles, state {state}, "
        f"{stop_failures:.0f} failed stops; stopped {stopped_after:.1f} s after it answered again; "
        + usage.stop()
    )
    assert cycles >= hung_for / 10 - 1, "the loop kept its cycle (interval 10 s at most)"
    assert state in ("holding", "restarting", "gave_up")
    assert stop_failures >= 1
    assert stopped_after < 30
    assert torrents.user_untouched()
    lab.heal("return-path")
    wait_for("torrents resumed", torrents.all_resumed, 90)


def test_a_hung_qbittorrent_alone_never_makes_the_watchdog_act(scenario):
    """qBittorrent SIGSTOPped for 40 s with the tunnel healthy: every read of it ends by
    its timeout (bind's `timeout` and `unreachable` are unknown: a hung WebUI moves no
    traffic), no action is taken, and once it answers again nothing of ours is stopped."""
    from qbt_vpn_watchdog.lab import procs

    lab, torrents, make = scenario
    w = make().start()
    wait_for("remediation ok", lambda: w.state() == "ok", 30)
    qbt = procs.running("client-qbt")
    assert qbt is not None
    states: set[str | None] = set()
    bind: set[str] = set()
    os.killpg(qbt, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            states.add(w.state())
            reasons = w.metrics().get("qbtvpn_check_reason", {})
            bind |= {k for k, v in reasons.items() if v == 1 and k.startswith('check="bind"')}
            time.sleep(2)
    finally:
        os.killpg(qbt, signal.SIGCONT)
    time.sleep(10)  # cycles with qBittorrent answering again: a late stop would land now
    states.add(w.state())
    acted = {a: w.count("qbtvpn_remediations_total", a) for a in ("stop_torrents", "restart_tunnel")}
    print(f"qBittorrent hung 40 s: bind said {sorted(bind)}; states {states}; actions {acted}")
    # The case under test happened: bind could not read qBittorrent.
    assert bind - {'check="bind",reason="ok"'}, bind
    assert states == {"ok"}, w.log_text()[-3000:]
    assert acted == {"stop_torrents": 0.0, "restart_tunnel": 0.0}
    assert not any(TAG in torrents.tags(h) for h in torrents.ours)
    assert torrents.user_untouched()
