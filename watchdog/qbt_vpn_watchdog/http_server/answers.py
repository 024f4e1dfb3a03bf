"""HTTP's side of the loop: a whole request head -> authentication -> the endpoints' answers.

/metrics, /healthz, /readyz and the landing page at /; GET and HEAD only.
"""

from __future__ import annotations

import email.utils
import logging
import queue
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from prometheus_client.exposition import gzip_accepted

from qbt_vpn_watchdog import __version__
from qbt_vpn_watchdog.http_server.bounds import CHECKING, _Conn
from qbt_vpn_watchdog.http_server.request import _BadRequest, _Head, parse_head

if TYPE_CHECKING:
    from qbt_vpn_watchdog.http_server.server import HttpServer

log = logging.getLogger("qbt_vpn_watchdog.http_server")  # one logger name for the server

TEXT = "text/plain; charset=utf-8"
STATUS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
}  # fmt: skip
# Relative links: the page works behind a reverse proxy's path prefix too.
LANDING = f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>qbt-vpn-watchdog</title></head>
<body>
<h1>qbt-vpn-watchdog</h1>
<p>Watchdog and Prometheus exporter for a qBittorrent box confined to a WireGuard tunnel.
Version {__version__}.</p>
<ul>
<li><a href="metrics">Metrics</a> (Prometheus text format, or OpenMetrics when asked for)</li>
<li><a href="healthz">Health</a> (200 while the poll loop is alive; the VPN's state in the text)</li>
<li><a href="readyz">Readiness</a> (200 while the tunnel is safe and no torrent is held;
503 otherwise: for uptime monitors)</li>
</ul>
</body>
</html>
""".encode()


class _Answers:
    """HTTP's side of the loop: a whole request head -> authentication -> an answer.

    Mixed into ``_Loop``, which owns the sockets (``_answer`` queues the bytes there).
    """

    owner: HttpServer
    ready: list
    done: queue.SimpleQueue
    _bug_logged: bool
    _guarded: Callable[..., None]

    def _next_request(self, conn: _Conn) -> None:
        """Handle the buffered request, if its head is whole."""
        buf = conn.buf
        blank = len(buf) - len(buf.lstrip(b"\r\n"))  # blank lines before a request
        if blank:
            # Counted against the head's bytes: an endless stream of them is a head
            # that never ends (431), not free work for the loop.
            conn.blank += blank
            if conn.blank > self.limits.head_bytes:
                self._drop(conn, "head_too_large", 431)
                return
            del buf[:blank]
        end = buf.find(b"\r\n\r\n")
        cut = end + 4
        alt = buf.find(b"\n\n")
        if alt != -1 and (end == -1 or alt < end):
            end, cut = alt, alt + 2
        if end == -1 or end > self.limits.head_bytes:
            if len(buf) > self.limits.head_bytes:
                self._drop(conn, "head_too_large", 431)
            elif conn.eof:
                self._close(conn)  # half a request, and no more will come
            return
        raw = bytes(buf[:end])
        del buf[:cut]
        conn.blank = 0
        try:
            head = parse_head(raw)
        except _BadRequest:
            self._drop(conn, "bad_request", 400)
            return
        self._dispatch(conn, head)

    def _dispatch(self, conn: _Conn, head: _Head) -> None:
        keep = head.version == "HTTP/1.1" and head.headers.get("connection", "").lower() != "close"
        if "content-length" in head.headers and head.headers["content-length"] != "0":
            keep = False  # a body we will not read: answer, then close
        if "transfer-encoding" in head.headers:
            keep = False
        conn.close_after = not keep or conn.eof
        if head.method not in ("GET", "HEAD"):
            self._answer(conn, 405, b"only GET and HEAD\n", TEXT, False, {"Allow": "GET, HEAD"})
            return
        gate = self.owner.gate
        verdict, extra = gate.decide(head.headers.get("authorization"), conn.client)
        if verdict == "ok":
            self._serve(conn, head)
        elif verdict == "check":
            conn.state, conn.head, conn.gate = CHECKING, head, gate
            self._want(conn, 0)
            self.owner.checker.submit(self, conn, extra)
        elif verdict == "throttled":
            self._answer(conn, 429, b"too many failed logins: retry later\n", TEXT,
                         head.method == "HEAD", {"Retry-After": str(extra)})  # fmt: skip
        else:
            self._unauthorized(conn, head)

    def _finish_checks(self) -> None:
        while True:
            try:
                conn, pending, ok = self.done.get_nowait()
            except queue.Empty:
                return
            self._guarded(conn, self._settle, conn, pending, ok)

    def _settle(self, conn: _Conn, pending, ok: bool) -> None:
        passed = (conn.gate or self.owner.gate).settle(pending, ok)
        head, conn.head, conn.gate = conn.head, None, None
        if conn.sock not in self.conns or head is None:
            return
        if passed:
            self._serve(conn, head)
        else:
            self._unauthorized(conn, head)

    def _unauthorized(self, conn: _Conn, head: _Head) -> None:
        challenge = {"WWW-Authenticate": self.owner.security.challenge}
        self._answer(conn, 401, b"unauthorized\n", TEXT, head.method == "HEAD", challenge)

    def _serve(self, conn: _Conn, head: _Head) -> None:
        try:
            self._route(conn, head)
        except Exception:  # noqa: BLE001 - one failed answer, never the loop
            if not self._bug_logged:
                self._bug_logged = True
                log.exception("http: cannot answer %s (a bug; logged once)", head.path)
            conn.close_after = True
            self._answer(conn, 500, b"internal error\n", TEXT, head.method == "HEAD")

    def _route(self, conn: _Conn, head: _Head) -> None:
        owner, is_head = self.owner, head.method == "HEAD"
        path = urlsplit(head.path).path
        if path == "/metrics":
            gz = gzip_accepted(head.headers.get("accept-encoding", ""))
            body, ctype = owner.render(head.headers.get("accept", ""), gz)
            extra = {"Vary": "Accept, Accept-Encoding"}
            if gz:
                extra["Content-Encoding"] = "gzip"
            self._answer(conn, 200, body, ctype, is_head, extra)
        elif path == "/healthz":
            code, text = owner.health()
            self._answer(conn, code, (text + "\n").encode(), TEXT, is_head)
        elif path == "/readyz":
            code, text = owner.ready()
            self._answer(conn, code, (text + "\n").encode(), TEXT, is_head)
        elif path == "/":
            self._answer(conn, 200, LANDING, "text/html; charset=utf-8", is_head)
        else:
            self._answer(conn, 404, b"not found: try /metrics, /healthz or /readyz\n", TEXT,
                         is_head)  # fmt: skip

    def _response(
        self, code: int, body: bytes, ctype: str, is_head: bool, extra=None, close=False
    ) -> bytes:
        lines = [
            f"HTTP/1.1 {code} {STATUS.get(code, 'Unknown')}",
            "Server: qbt-vpn-watchdog",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",  # HEAD: what GET would send
            "Cache-Control: no-store",
            *(f"{k}: {v}" for k, v in (extra or {}).items()),
            "Connection: close" if close else f"Keep-Alive: timeout={int(self.limits.idle_timeout)}",
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if is_head else head + body
