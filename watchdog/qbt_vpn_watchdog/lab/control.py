"""Bring the lab up and down, report its state, write the watchdog config for it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from qbt_vpn_watchdog.lab import (
    faults,
    procs,
    qbt_versions,
    services,
    state,
    vpn_confinement,  # noqa: F401 - registers its shape's builder
)
from qbt_vpn_watchdog.lab import topology as t
from qbt_vpn_watchdog.lab.state import CONFIG_PATH, STATE_DIR

# The lab is one per machine. Whoever builds or tears it down (a test session,
# the demo, `lab up`/`lab down`) holds this lock meanwhile, so two test sessions
# never tear down each other's lab. It lives outside STATE_DIR, which `down`
# removes; the (empty) file itself stays, as lock files do.
LOCK_PATH = Path("/run/lock/qvl-lab.lock")


class LabBusy(t.LabError):
    pass


# Who holds the lock in this process: (pid, thread id). flock() is per open
# file, so a second open() of the lock in the same process would wait for the
# first: the holder's nested exclusive() (a bench that calls lab_up() from inside
# the lab fixture) is let through instead. The pid keeps a forked child from
# taking its parent's hold for its own.
_holder: tuple[int, int] | None = None


@contextlib.contextmanager
def exclusive(wait: float = 0.0) -> Iterator[None]:
    """Hold the lab lock; wait up to ``wait`` seconds for it, else raise LabBusy.

    Re-entrant: the thread that holds it may take it again (it is released when
    the outermost hold ends). Another thread or process waits, as before.
    """
    global _holder
    me = (os.getpid(), threading.get_ident())
    if _holder == me:
        yield  # the outermost hold releases it
        return
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise LabBusy(
                        f"the lab is in use by process {holder} (a test session or the demo); "
                        "try again when it is done"
                    ) from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _holder = me
        try:
            yield
        finally:
            _holder = None
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_up() -> bool:
    return state.UP_MARKER.exists()


def stale() -> bool:
    """Anything of a lab left over (a crashed run, a test killed mid-way)."""
    return (
        STATE_DIR.exists()
        or any(t.ns_exists(n) for n in t.NAMESPACES)
        or any(t.ns_exists(s.ns_vpn) or t.link_exists(s.lan_host) for s in t.SHAPES.values())
        or bool(t.blackholes_present())
        or bool(_sockets())
    )


def _sockets() -> list[Path]:
    return sorted(Path("/var/run/wireguard").glob("qvl*.sock"))


def up(shape: str = "own") -> Path:
    """Build the whole lab with the confined side shaped as ``shape`` (topology.SHAPES);
    returns the watchdog config path. Tears down on failure."""
    t0 = time.monotonic()
    # QBT_VERSION names a version that is installed, or nothing is built.
    qbt_versions.check_installed(qbt_versions.selected())
    t.select(shape)
    try:
        # Safety first: nothing lab-addressed can leave the root namespace, even
        # before the first link exists.
        t.blackholes_up()
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        STATE_DIR.chmod(0o700)
        t.remember_shape()
        services.write_wireguard_configs()
        services.make_test_torrent()
        services.write_client_profile()
        t.outer_up()
        services.start_wireguard_server()
        services.start_dnsmasq()
        services.start_whatismyip()
        services.start_seeder()
        # The confined side, with the same script the host runs.
        t.confined("up")
        services.start_client_qbt()
        path = write_watchdog_config()
        state.UP_MARKER.write_text(f"{time.time():.0f} {time.monotonic() - t0:.2f}\n")
        return path
    except BaseException:
        down()
        raise


def down() -> list[str]:
    """Remove everything of the lab; idempotent. Returns what it found still running."""
    for name in list(state.applied_faults()):
        try:
            faults.heal_fault(name)
        except Exception:  # noqa: BLE001 - tearing down anyway
            state.clear_fault(name)
    stopped = procs.stop_all()
    if t.confined_present():
        try:
            t.confined("down")
        except t.LabError:
            pass  # whatever is left goes with the namespaces below
    t.namespaces_down()
    for sock in _sockets():
        sock.unlink(missing_ok=True)
    t.blackholes_down()
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    t.select(t.OWN)
    return stopped


def reshape(shape: str) -> Path:
    """Swap the running lab's confined side for another shape; the rest stays up.

    The confined qBittorrent is stopped, the old confined side removed, the new
    one built and qBittorrent started in it (its profile rewritten for the new
    interface). Returns the new watchdog config. Faults must be healed first.
    """
    if state.applied_faults():
        raise t.LabError(f"heal the applied faults first: {', '.join(state.applied_faults())}")
    if shape == t.SHAPE.name:
        return write_watchdog_config()
    services.stop_client_qbt()
    if t.confined_present():
        t.confined("down")
    t.select(shape)
    t.remember_shape()
    t.confined("up")
    services.write_client_profile()
    services.start_client_qbt()
    return write_watchdog_config()


def restart_tunnel() -> None:
    faults.restart_tunnel()


# --- the watchdog config -----------------------------------------------------------


def restart_command() -> list[str]:
    return [sys.executable, "-m", "qbt_vpn_watchdog.lab", "restart-tunnel"]


def _toml_list(items) -> str:
    return "[" + ", ".join(f'"{x}"' for x in items) + "]"


def watchdog_config_text() -> str:
    text = f"""# Generated by `qbt-vpn-watchdog lab up`: every probe points at lab addresses.
# Lab shape: {t.SHAPE.name} (on a host, tier 2 runs: {t.SHAPE.host_restart}).
[watchdog]
interval = 2.0
mode = "enforce"
listen_address = "127.0.0.1"
listen_port = {t.METRICS_PORT}

[namespace]
name = "{t.NS_VPN}"
built_by_vpn_netns = {str(t.SHAPE.built_by_vpn_netns).lower()}

[wireguard]
interface = "{t.WG_CLIENT}"
reader = "uapi"

[qbittorrent]
url = "http://{t.LAN_NS_IP}:{t.WEBUI_PORT}"
username = "{services.USERNAME}"
password_file = "{state.PASSWORD_FILE}"
forwarded_port = {t.FORWARDED_PORT}
timeout = 5.0

[checks.dns]
names = {_toml_list(services.DNS_NAMES)}
timeout = 2.0

[checks.exit_ip]
url = "http://{t.WHATISMYIP_IP}/api/whatismyip/"
interval = 5.0
timeout = 3.0
allowed_ips = ["{t.EXIT_IP}"]

[checks.webui]
interval = 4.0
lan_url = "http://{t.LAN_NS_IP}:{t.WEBUI_PORT}"
"""
    # The exit address is where a port forward on the server would expose it.
    text += f'probe_addresses = ["{t.EXIT_IP}"]\n'
    # The forwarded port, from the lab's "internet" side (the root namespace's
    # routes to lab addresses are blackholes); the exit address is the one
    # exit_ip sees. Every 4 s: every 2nd cycle, like webui.
    text += f'\n[checks.port_forward]\ninterval = 4.0\ntimeout = 3.0\nprobe_netns = "{t.NS_INET}"\n'
    # Tier 2 is the lab's restart-tunnel (what the NixOS unit's reload does);
    # a short back-off so that tests and the demo see it act.
    text += (
        f"\n[remediation]\nrestart_command = {_toml_list(restart_command())}\n"
        "restart_backoff_initial = 5.0\n"
    )
    return text


def write_watchdog_config() -> Path:
    CONFIG_PATH.write_text(watchdog_config_text())
    return CONFIG_PATH


# --- status ---------------------------------------------------------------------------


def running_qbittorrent_version(timeout: float = 3.0) -> str | None:
    """The confined client's version as it reports it (``app/version``, e.g. "v5.1.0")."""
    if not procs.running("client-qbt", "qbittorrent-nox"):
        return None
    try:
        return services.qbt_client(timeout).app_version()
    except Exception:  # noqa: BLE001 - status reports what it can
        return None


def status() -> dict:
    wg = t.run(["wg", "show", t.WG_CLIENT, "dump"], check=False) if t.ns_exists(t.NS_VPN) else ""
    peer = {}
    lines = wg.splitlines()
    if len(lines) > 1:
        f = lines[1].split("\t")
        peer = {
            "endpoint": f[2],
            "latest_handshake": int(f[4]),
            "rx_bytes": int(f[5]),
            "tx_bytes": int(f[6]),
        }
    return {
        "up": is_up(),
        "shape": t.SHAPE.name,
        "config": str(CONFIG_PATH) if CONFIG_PATH.exists() else None,
        "namespaces": [n for n in t.NAMESPACES if t.ns_exists(n)],
        "processes": {n: procs.running(n) for n in procs.recorded()},
        "faults": state.applied_faults(),
        "blackholes": t.blackholes_present(),
        "client_peer": peer,
        "webui": f"http://{t.LAN_NS_IP}:{t.WEBUI_PORT}",
        "qbittorrent_version": running_qbittorrent_version(),
        "metrics": f"http://127.0.0.1:{t.METRICS_PORT}/metrics",
    }
