"""The HTTP endpoints: /metrics, /healthz and a landing page at /.

The server runs in its own daemon threads and calls only the two callables it
is given, which read the last snapshot: a scrape never reaches a source, so it
answers at once even while a probe is stuck.

Like every exporter: /metrics negotiates the format from the Accept header
(OpenMetrics for a Prometheus that asks for it, else the text format 0.0.4)
and gzips when Accept-Encoding allows (both by prometheus_client's own
``choose_encoder``/``gzip_accepted``); GET and HEAD everywhere; ``/`` is a
landing page linking the two endpoints. prometheus_client's own handler is
not used as the server: it renders on every scrape (here the loop renders
once per cycle, see ``metrics.Exposition``), closes the connection after
each one, and answers HEAD with 501.

HTTPS and basic auth come from the config's [web] section (``web_security``),
as exporter-toolkit's web config gives Go exporters: every path asks for the
credentials, and TLS is set up per accepted connection, in that connection's
own thread (a client that never finishes its handshake holds only its thread,
never the accept loop). A reload swaps ``HttpServer.security``; the next
connection uses the new certificate, the next request the new password.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.exposition import gzip_accepted

from qbt_vpn_watchdog import __version__
from qbt_vpn_watchdog.web_security import WebSecurity

log = logging.getLogger(__name__)

# The exposition of the current snapshot for an Accept header, gzipped or not:
# (body, Content-Type).
RenderFn = Callable[[str, bool], tuple[bytes, str]]
HealthFn = Callable[[], tuple[int, str]]  # (HTTP status, one line)

TEXT = "text/plain; charset=utf-8"
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
</ul>
</body>
</html>
""".encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        render: RenderFn,
        health: HealthFn,
        security: Callable[[], WebSecurity],
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.render = render
        self.health = health
        self.security = security
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        ctx = self.security().ssl_context
        if ctx is not None:  # the handshake happens in the handler's thread
            sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed handshake (plain HTTP to the TLS port, an old TLS version)
        # is the client's problem: one debug line, not a traceback on stderr.
        log.debug("http: connection from %s failed", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # a client that never finishes its request does not hold a thread forever
    server_version = "qbt-vpn-watchdog"
    # Keep-alive: Prometheus keeps its connection, so a scrape is one request,
    # not a TCP handshake and a new thread.
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(self.timeout)
            self.request.do_handshake()
        super().setup()
        # Headers and body go out in two writes; on a kept connection Nagle
        # and the client's delayed ACK would add 40 ms to every scrape.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(head=True)

    def _answer(self, head: bool) -> None:
        path = urlsplit(self.path).path
        security = self.server.security()
        if not security.authorized(self.headers.get("Authorization")):
            self._send(401, b"unauthorized\n", TEXT, head, {"WWW-Authenticate": security.challenge})
        elif path == "/metrics":
            gz = gzip_accepted(self.headers.get("Accept-Encoding", ""))
            body, ctype = self.server.render(self.headers.get("Accept", ""), gz)
            extra = {"Vary": "Accept, Accept-Encoding"}
            if gz:
                extra["Content-Encoding"] = "gzip"
            self._send(200, body, ctype, head, extra)
        elif path == "/healthz":
            code, text = self.server.health()
            self._send(code, (text + "\n").encode(), TEXT, head)
        elif path == "/":
            self._send(200, LANDING, "text/html; charset=utf-8", head)
        else:
            self._send(404, b"not found: try /metrics or /healthz\n", TEXT, head)

    def _send(
        self, code: int, body: bytes, ctype: str, head: bool, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))  # HEAD: what GET would send
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one line per scrape would drown the state changes


class HttpServer:
    """/metrics and /healthz on one address; ``move`` binds another before letting go."""

    def __init__(
        self, render: RenderFn, health: HealthFn, security: WebSecurity | None = None
    ) -> None:
        self._render = render
        self._health = health
        self.security = security or WebSecurity()  # swapped by a reload, read per connection
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        return self._server.server_address[:2] if self._server else None

    def start(self, address: tuple[str, int]) -> None:
        """Listen on ``address`` (OSError when it cannot) and serve from a thread."""
        self._server = _Server(address, self._render, self._health, lambda: self.security)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="http",
            daemon=True,
        )  # fmt: skip
        self._thread.start()

    def move(self, address: tuple[str, int]) -> None:
        """Serve on ``address`` instead; on failure (OSError) the old one keeps serving."""
        old, old_thread = self._server, self._thread
        self.start(address)
        if old is not None:
            old.shutdown()
            old.server_close()
        if old_thread is not None:
            old_thread.join(2)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
