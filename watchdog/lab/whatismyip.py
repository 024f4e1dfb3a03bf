"""The lab's stand-in for https://airvpn.org/api/whatismyip/ (run inside qvl-inet).

Answers AirVPN's JSON shape with the address the request came from. While the
fault file exists (the `exit-ip` fault) it claims a non-AirVPN exit instead.

    python -m watchdog.lab.whatismyip --bind ADDR --port 80 --fault-file PATH
"""

from __future__ import annotations

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OTHER_IP = "198.18.9.9"  # what the `exit-ip` fault reports: not the VPN's exit


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
            body = json.dumps(answer(self.client_address[0], os.path.exists(a.fault_file))).encode()
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
