"""Time one ``Qbittorrent.state()`` against a real qbittorrent-nox (printed, not a test).

Run as root: ``.venv/bin/python tests/bench/qbittorrent_state.py [N ...]``
(default: 3 and 200 torrents); ``QBT_VERSION=5.1`` for qBittorrent 5.1. qbittorrent-nox
runs in a namespace ``qvq-bench-*``, reached over an on-link veth (a free /30 in
169.254.64.0/18); the adapter runs in the root
namespace as the watchdog does. Median and max over 50 calls, after one
warm-up call that logs in.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from qbt_vpn_watchdog.sources.qbittorrent import Qbittorrent  # noqa: E402
from tests.support.qbt_nox import PASSWORD, USERNAME, QbtNox  # noqa: E402


def main() -> None:
    counts = [int(x) for x in sys.argv[1:]] or [3, 200]
    q = QbtNox("bench", root_link=True)
    q.start()
    try:
        a = Qbittorrent(q.url, USERNAME, lambda: PASSWORD, 5.0)
        s = a.state()
        print(f"qBittorrent {s.version} (Web API {s.api_version}), QBT_VERSION={q.version}")
        have = 0
        for n in sorted(counts):
            while have < n:
                a._client.torrents_add(
                    torrent_files=q.make_torrent(f"t{have:04d}", size=16384),
                    save_path=str(q.save_path),
                    is_skip_checking=True,
                )
                have += 1
            deadline = time.monotonic() + 60
            while len(a.state().torrents) < n and time.monotonic() < deadline:
                time.sleep(0.2)
            times = []
            for _ in range(50):
                t0 = time.perf_counter()
                s = a.state()
                times.append(time.perf_counter() - t0)
            med, top = statistics.median(times) * 1000, max(times) * 1000
            print(
                f"{len(s.torrents):4d} torrents: state() median {med:.1f} ms,"
                f" max {top:.1f} ms over 50 calls ({a.logins} login)"
            )
    finally:
        q.stop()


if __name__ == "__main__":
    main()
