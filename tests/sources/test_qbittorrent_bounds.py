"""The qBittorrent adapter's bounds: every Web API call ends by its timeout and reads at most
MAX_ANSWER_BYTES, whatever the WebUI sends, and stopping torrents never waits behind a
state read (real qbittorrent-api and requests against a loopback fake that misbehaves)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from qbt_vpn_watchdog.sources import SourceError
from qbt_vpn_watchdog.sources import qbittorrent as qbittorrent_source
from qbt_vpn_watchdog.sources.qbittorrent import MAX_ANSWER_BYTES, Qbittorrent
from tests.support.dripper import HEADERS_DRIP, TLS_DRIP, Dripper
from tests.support.fake_qbittorrent import FakeQbittorrent

pytestmark = pytest.mark.qbittorrent

PASSWORD = "pw-bounds"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_gates():
    qbittorrent_source._gates.clear()
    yield
    qbittorrent_source._gates.clear()


def drip(gap: float, stop: threading.Event | None = None):
    """An answer whose headers come at once and whose body comes one byte every ``gap`` s."""

    def write(w) -> None:
        w.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        w.flush()
        for _ in range(100000):
            if (stop or threading.Event()).wait(gap):
                return
            w.write(b" ")
            w.flush()

    return write


def adapter(url: str, timeout: float) -> Qbittorrent:
    return Qbittorrent(
        url, "admin", lambda: PASSWORD, timeout, verify_timeout=0.4, verify_settle=0.05,
        poll_interval=0.02,
    )  # fmt: skip


def test_a_dripped_answer_ends_by_the_timeout():
    # Every recv gets a byte within 0.5 s, so the 1 s socket timeout never fires:
    # before the overall deadline, state() stayed busy for as long as the drip lasted.
    stop = threading.Event()
    with FakeQbittorrent(PASSWORD) as fake:
        fake.raw["sync/maindata"] = drip(0.5, stop)
        t0 = time.monotonic()
        with pytest.raises(SourceError) as e:
            adapter(fake.url, 2.0).state()
        took = time.monotonic() - t0
        stop.set()
    print(f"state() with a maindata dripped a byte every 0.5 s, timeout 2 s: {took:.2f} s")
    assert e.value.kind == "unreachable" and "timed out" in str(e.value)
    # Two attempts of timeout/2 each (qbittorrent-api retries once, 0.6 s apart).
    assert took < 2.0 + 0.6 + 0.5, f"state() took {took:.1f} s"


def test_stopping_torrents_does_not_wait_behind_a_hung_state_read():
    stop = threading.Event()
    with FakeQbittorrent(PASSWORD) as fake:
        a = adapter(fake.url, 6.0)
        a.state()  # logged in, as in the daemon
        fake.raw["sync/maindata"] = drip(0.5, stop)
        reader = threading.Thread(target=lambda: pytest.raises(SourceError, a.state), daemon=True)
        reader.start()
        time.sleep(0.5)  # the state read is now hanging in sync/maindata
        t0 = time.monotonic()
        stopped = a.stop_active("watchdog-stopped")
        took = time.monotonic() - t0
        still_reading = reader.is_alive()
        stop.set()
        reader.join(10)
    assert len(stopped) == 3 and took < 2.0, f"stop took {took:.1f} s"
    assert still_reading, "the state read should still have been hanging"


HUGE = textwrap.dedent(
    r"""
    import json, sys
    from qbt_vpn_watchdog.sources import SourceError
    from qbt_vpn_watchdog.sources.qbittorrent import Qbittorrent
    from tests.support.fake_qbittorrent import FakeQbittorrent

    SIZE = 200 * 1024 * 1024
    CHUNK = b"[" + b"1," * 524287 + b"1"  # 1 MiB, sent again and again

    def huge(w):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % SIZE if sys.argv[1] == "length" else
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        for _ in range(SIZE // len(CHUNK)):
            w.write(CHUNK)

    def kib(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])

    with FakeQbittorrent("pw") as fake:
        a = Qbittorrent(fake.url, "admin", lambda: "pw", 20.0)
        a.state()  # every module loaded, a session open: the daemon's steady state
        idle = kib("VmRSS")
        fake.raw["app/preferences"] = huge
        try:
            a.state()
            err = None
        except SourceError as e:
            err = [e.kind, str(e)]
        print(json.dumps({"idle_kib": idle, "peak_kib": kib("VmHWM"), "error": err}))
    """
)


@pytest.mark.parametrize("framing", ["length", "until-close"])
def test_a_200_mib_answer_is_cut_off_at_the_cap(tmp_path, framing):
    script = tmp_path / "huge.py"
    script.write_text(HUGE)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, str(script), framing], capture_output=True, text=True, timeout=120, env=env
    )
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout)
    kind, text = got["error"]
    assert kind == "bad_response" and f"cap of {MAX_ANSWER_BYTES} bytes" in text, text
    grew = (got["peak_kib"] - got["idle_kib"]) / 1024
    print(
        f"{framing}: idle {got['idle_kib'] / 1024:.0f} MiB, peak {got['peak_kib'] / 1024:.0f} MiB"
    )
    # Before the cap the whole answer was read (and parsed): 1,096 MiB for 200 MiB.
    assert grew < 2 * MAX_ANSWER_BYTES / 2**20 + 16, f"RSS grew {grew:.0f} MiB"


@pytest.mark.parametrize(
    "scheme, data",
    [("http", HEADERS_DRIP), ("https", TLS_DRIP)],
    ids=["headers", "tls-handshake"],
)
def test_the_webui_probe_ends_by_its_timeout_however_slowly_bytes_come(scheme, data):
    d = Dripper(socket.create_server(("127.0.0.1", 0)), data, 0.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(SourceError) as e:
            qbittorrent_source.webui_probe(f"{scheme}://127.0.0.1:{d.port}", 1.5)
        took = time.monotonic() - t0
    finally:
        d.close()
    print(f"{scheme}: the 1.5 s probe ended after {took:.2f} s")
    assert e.value.kind == "unreachable" and "timed out" in str(e.value)
    assert took < 2.0, f"the 1.5 s probe took {took:.1f} s"
