"""The HTTP endpoints: /metrics, /healthz, /readyz and a landing page at /.

Bounded by construction, so that nothing a client does to this port can
change what the checks see (a flood of slow connections once took every file
descriptor of the process, and the checks' own sockets failed with EMFILE):

* one thread runs an event loop (``selectors``) for every connection: no
  thread per connection; a second thread runs password checks, one at a time;
* at most ``max_connections`` connections (``web.max_connections``, 40 by
  default, as node_exporter's ``--web.max-requests``), so the server holds at
  most max_connections + 4 file descriptors, whatever the flood. At the cap a
  new connection takes the place of the oldest one that has not finished
  sending its request (then the oldest idle kept-alive one); when every
  connection is in the middle of a request, the new one gets a 503 at once.
  A scraper's kept-alive connection is therefore never pushed out by clients
  that have not sent a whole request, and a new scraper gets in too;
* the whole request head (the TLS handshake included) must arrive within
  ``HEAD_TIMEOUT`` of the first byte, in at most ``HEAD_BYTES``: one deadline
  per request, not a timeout re-armed by every byte; a longer head gets 431
  and the connection is closed, so a connection never holds more than
  HEAD_BYTES of ours. Bodies are never read (GET and HEAD only);
* authentication (``web_security.Gate``) is decided from the head alone,
  before any work; the password check itself runs in the checker thread, so a
  guessing client cannot stall the loop;
* kept-alive connections stay ``IDLE_TIMEOUT`` (longer than Prometheus's own
  5-minute keep-alive, far longer than a 15 s scrape interval), so a scrape is
  one request on an open connection; a listen backlog of ``BACKLOG``.

Why in the daemon's process and not a separate unprivileged one: the bounds
above make the server's cost fixed (descriptors, memory, one thread), and a
second process would need the rendered metrics handed over, its own
supervision and its own failure modes; the separation buys nothing the cap
does not already give (docs/design.md).

/metrics negotiates the format from the Accept header (OpenMetrics for a
Prometheus that asks for it, else the text format 0.0.4) and gzips when
Accept-Encoding allows, through prometheus_client's own ``choose_encoder`` and
``gzip_accepted``; the bytes are rendered once per cycle by the loop
(``metrics.Exposition``), so a scrape only writes them. A reload swaps
``HttpServer.security``: the next connection uses the new certificate, the
next request the new users.

The modules inside, by job: ``bounds`` (the limits and their defaults, what
the server counts, a connection's record and states), ``connections`` (the
connection table: accepting within the cap, pushing out, closing),
``request`` (parsing a request head), ``answers`` (a whole head ->
authentication -> the endpoints' answers), ``loop`` (the event-loop thread:
deadlines, reading, writing) and ``server`` (``HttpServer``, the password
checker thread). Import from here; the modules are how the package is
arranged, not its interface.
"""

from __future__ import annotations

from qbt_vpn_watchdog.http_server.bounds import (
    ACCEPTS_PER_TURN,
    BACKLOG,
    CHECKING,
    DROP_REASONS,
    HANDSHAKE,
    HEAD_BYTES,
    HEAD_TIMEOUT,
    IDLE,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    READING,
    WRITE_TIMEOUT,
    WRITING,
    HttpStats,
    Limits,
)
from qbt_vpn_watchdog.http_server.request import parse_head
from qbt_vpn_watchdog.http_server.server import (
    HealthFn,
    HttpServer,
    RenderFn,
    fd_budget,
    open_fds,
)

__all__ = [
    "ACCEPTS_PER_TURN",
    "BACKLOG",
    "CHECKING",
    "DROP_REASONS",
    "HANDSHAKE",
    "HEAD_BYTES",
    "HEAD_TIMEOUT",
    "IDLE",
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "READING",
    "WRITE_TIMEOUT",
    "WRITING",
    "HealthFn",
    "HttpServer",
    "HttpStats",
    "Limits",
    "RenderFn",
    "fd_budget",
    "open_fds",
    "parse_head",
]
