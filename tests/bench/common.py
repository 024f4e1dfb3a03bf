"""What the benchmarks share: the lab, concurrent scrapers, a slow proxy in front of the
WebUI, and many generated torrents (the daemon as a process: tests/support/daemon_proc.py).

Everything talks to loopback or to the lab's own namespaces (the lab's LAN
veth for the WebUI), never to the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import multiprocessing as mp
import os
import re
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support.monitoring import free_port
from tests.support.procs import wait_for

ROOT = Path(__file__).resolve().parents[2]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


@contextlib.contextmanager
def lab_up() -> Iterator[Path]:
    """The lab's watchdog config; brought up (and down afterwards) unless it already was.

    Always under the lab lock: a lab that is up may be another session's test
    run, whose qBittorrent must not get our torrents in the middle of it. A
    caller that holds the lock already (the lab fixture) takes it again without
    waiting: the lock is re-entrant (tests/lab/test_lab_lock.py).
    """
    from qbt_vpn_watchdog.lab import control
    from qbt_vpn_watchdog.lab.state import CONFIG_PATH

    with control.exclusive(wait=900):
        if control.is_up():
            yield CONFIG_PATH
            return
        if control.stale():
            control.down()
        path = control.up()
        try:
            yield path
        finally:
            control.down()



def config_for(
    base: Path, out: Path, port: int, *, interval: float | None = None, qbt_url: str | None = None
) -> Path:
    """The lab's config in observe mode with our metrics port (and interval, WebUI URL)."""
    text = base.read_text()
    text = re.sub(r"(?m)^listen_port = \d+$", f"listen_port = {port}", text)
    text = re.sub(r'(?m)^mode = "\w+"$', 'mode = "observe"', text)
    if interval is not None:  # the first `interval` is [watchdog]'s
        text = re.sub(r"(?m)^interval = [\d.]+$", f"interval = {interval}", text, count=1)
    if qbt_url is not None:  # the first `url` is [qbittorrent]'s
        text = re.sub(r'(?m)^url = ".*"$', f'url = "{qbt_url}"', text, count=1)
    out.write_text(text)
    return out


# --- scraping -------------------------------------------------------------------


# What Prometheus 2.x sends (scrape.go's acceptHeader, and gzip): OpenMetrics preferred.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}


def _scraper(port: int, n: int, out: mp.Queue, headers: dict[str, str]) -> None:
    times = []
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(n):
        t0 = time.perf_counter()
        c.request("GET", "/metrics", headers=headers)
        r = c.getresponse()
        r.read()
        if r.getheader("Connection", "").lower() == "close" or r.version == 10:
            c.close()
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        times.append(time.perf_counter() - t0)
    out.put(times)


def scrape_latencies(
    port: int, scrapers: int = 4, each: int = 250, headers: dict[str, str] | None = None
) -> list[float]:
    """Seconds per GET /metrics, ``scrapers`` processes at once, each one after another
    (with ``headers``, e.g. PROMETHEUS_HEADERS; none: a plain GET)."""
    q: mp.Queue = mp.Queue()
    ps = [mp.Process(target=_scraper, args=(port, each, q, headers or {})) for _ in range(scrapers)]
    for p in ps:
        p.start()
    times = [t for _ in ps for t in q.get(timeout=600)]
    for p in ps:
        p.join()
    return times


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# --- a slow WebUI ---------------------------------------------------------------------


class SlowProxy:
    """A TCP proxy on 127.0.0.1 that holds every request ``delay`` seconds before passing it on."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target, self.delay = target, delay
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def pipe(reader, writer, delay):
            try:
                while data := await reader.read(65536):
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(cr, cw):
            try:
                sr, sw = await asyncio.open_connection(*self.target)
            except OSError:
                cw.close()
                return
            await asyncio.gather(pipe(cr, sw, self.delay), pipe(sr, cw, 0))

        async def main():
            self.server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            self._ready.set()
            await self.server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(main())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        for task in asyncio.all_tasks(self.loop):
            self.loop.call_soon_threadsafe(task.cancel)


# --- many torrents -----------------------------------------------------------------


def bencode(x) -> bytes:
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, list):
        return b"l" + b"".join(map(bencode, x)) + b"e"
    return b"d" + b"".join(bencode(k) + bencode(x[k]) for k in sorted(x)) + b"e"


def make_torrents(n: int, tracker: str, where: Path) -> list[Path]:
    """``n`` private single-file torrents of 16 KiB that nobody seeds (they stay active)."""
    out = []
    for i in range(n):
        info = {
            "name": f"qvb-{i:05d}.bin",
            "length": 16384,
            "piece length": 16384,
            "pieces": hashlib.sha1(os.urandom(16)).digest(),
            "private": 1,
        }
        p = where / f"qvb-{i:05d}.torrent"
        p.write_bytes(bencode({"announce": tracker, "info": info}))
        out.append(p)
    return out


def load_torrents(client, n: int, tracker: str) -> float:
    """Add ``n`` generated torrents to qBittorrent; returns seconds until it lists them all."""
    tmp = Path(tempfile.mkdtemp(prefix="qvb-"))
    files = make_torrents(n, tracker, tmp)
    t0 = time.monotonic()
    for i in range(0, n, 100):
        client.torrents_add(torrent_files=[str(f) for f in files[i : i + 100]], save_path=str(tmp))
    have = lambda: sum(t.name.startswith("qvb-") for t in client.torrents_info())  # noqa: E731
    wait_for(f"{n} torrents in qBittorrent", lambda: have() >= n, 300, 1.0)
    return time.monotonic() - t0


def remove_torrents(client) -> None:
    hashes = [t.hash for t in client.torrents_info() if t.name.startswith("qvb-")]
    for i in range(0, len(hashes), 200):
        client.torrents_delete(delete_files=True, torrent_hashes=hashes[i : i + 200])
    gone = lambda: not any(t.name.startswith("qvb-") for t in client.torrents_info())  # noqa: E731
    wait_for("the generated torrents gone", gone, 120, 1.0)
