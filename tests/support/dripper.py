"""A TCP server that answers every connection with fixed bytes, one every ``gap`` seconds.

Every recv of the client gets its byte well within a socket timeout, so only an
overall deadline ends the exchange: the tests of the watchdog's bounded reads
(the exit-IP GET, the Web API) point their clients at it.
"""

from __future__ import annotations

import socket
import threading


class Dripper:
    """Serves on ``srv`` (bound; listened on here) until closed; a context manager."""

    def __init__(self, srv: socket.socket, data: bytes, gap: float) -> None:
        self.srv, self.data, self.gap = srv, data, gap
        self.port = srv.getsockname()[1]
        self.stop = threading.Event()
        srv.listen(4)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(c,), daemon=True).start()

    def _drip(self, c: socket.socket) -> None:
        with c:
            for b in self.data:
                if self.stop.wait(self.gap):
                    return
                try:
                    c.sendall(bytes([b]))
                except OSError:
                    return  # the client gave up: what the deadline is for

    def close(self) -> None:
        self.stop.set()
        try:
            self.srv.shutdown(socket.SHUT_RDWR)  # wakes the accept(): close() alone does not
        except OSError:
            pass
        self.srv.close()

    def __enter__(self) -> Dripper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Headers that never end, and a TLS record header announcing 16 KiB of
# ServerHello followed by its body: a client waits byte after byte in either.
HEADERS_DRIP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Slow: " + b"a" * 60
TLS_DRIP = b"\x16\x03\x03\x40\x00" + b"\x02" * 60
