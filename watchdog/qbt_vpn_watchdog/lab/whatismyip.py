"""The lab's stand-in for https://airvpn.org/api/whatismyip/ (run inside qvl-inet).

Answers AirVPN's JSON shape with the address the request came from. While the
fault file exists (the `exit-ip` fault) it claims a non-AirVPN exit instead.

It is also the lab's bulk peer on "the internet", for tests that need real
traffic through the tunnel: ``GET /bytes/N`` sends N bytes (full-size TCP
segments: what an MTU black hole swallows), ``POST /sink`` reads the body and
answers how many bytes arrived.

    python -m qbt_vpn_watchdog.lab.whatismyip --bind ADDR --port 80 --fault-file PATH
"""

from __future__ import annotations

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OTHER_IP = "198.18.9.9"  # what the `exit-ip` fault reports: not the VPN's exit
MAX_BULK = 1 << 34  # 16 GiB: a typo in a test must not stream forever
_CHUNK = bytes(1 << 16)


def answer(peer_ip: str, faulty: bool) -> dict:
    if faulty:
        return {"ip": OTHER_IP, "airvpn": False, "geo": {"country": "Nowhere"}, "result": "ok"}
    return {
        "ip": peer_ip,
        "airvpn": True,
        "geo": {"continent": "Europe", "country": "Netherlands", "country_code": "nl"},
        "result": "ok",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--fault-file", required=True)
    a = ap.parse_args(argv)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.startswith("/bytes/"):
                return self._bulk(self.path.removeprefix("/bytes/"))
            body = json.dumps(answer(self.client_address[0], os.path.exists(a.fault_file))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _bulk(self, count: str) -> None:
            n = int(count) if count.isdigit() else -1
            if not 0 <= n <= MAX_BULK:
                self.send_error(400, f"want /bytes/N with 0 <= N <= {MAX_BULK}")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            try:
                while n > 0:
                    k = min(n, len(_CHUNK))
                    self.wfile.write(_CHUNK[:k])
                    n -= k
            except OSError:
                pass  # the client gave up (a test's timeout, a stalled tunnel)

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/sink":
                self.send_error(404)
                return
            left = int(self.headers.get("Content-Length") or 0)
            got = 0
            try:
                while left > 0 and (data := self.rfile.read(min(left, 1 << 16))):
                    got += len(data)
                    left -= len(data)
            except OSError:
                return
            body = json.dumps({"received": got}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args) -> None:
            pass

    ThreadingHTTPServer((a.bind, a.port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
