"""A requests transport with an overall deadline and a size cap on every answer.

requests (through urllib3) bounds each ``recv`` by its timeout, never the
whole request: a WebUI that drips its answer, one byte a second, keeps a
call busy for as long as it likes, and an answer of any size is read into
memory whole. ``BoundedAdapter`` bounds both, for every call made through a
session it is mounted on (qbittorrent.py mounts it on qbittorrent-api's):

- the whole exchange (connect, TLS, request, headers, body) ends at the
  request's timeout (the number requests passes; for a (connect, read) pair,
  their sum): the sockets are shut down by ``deadline.Deadline`` and the
  call fails with ``requests.Timeout``;
- the body is read in chunks, always within that deadline (also for
  ``stream=True``), and the call fails with ``AnswerTooLarge`` (a
  ``requests.RequestException``) past ``max_bytes``, before more is read
  (or, with ``truncate``, keeps the first ``max_bytes``).
"""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from qbt_vpn_watchdog.sources.deadline import Deadline, under, watch_current

_CHUNK = 65536


class AnswerTooLarge(requests.RequestException):
    """The body passed the adapter's cap; nothing more was read."""


class _Watched:
    """Mixed into urllib3's connections: their sockets join this thread's deadline."""

    sock: object

    # The raw socket, before any TLS wrap: the deadline then covers the handshake.
    def _new_conn(self):  # type: ignore[no-untyped-def]
        sock = super()._new_conn()  # type: ignore[misc]
        watch_current(sock)
        return sock

    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        watch_current(self.sock)  # a kept-alive connection: no _new_conn this time
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def _seconds(timeout: object, default: float) -> float:
    if isinstance(timeout, tuple):
        parts = [t for t in timeout if isinstance(t, (int, float))]
        return float(sum(parts)) if parts else default
    if isinstance(timeout, (int, float)):
        return float(timeout)
    return default


class BoundedAdapter(HTTPAdapter):
    """``HTTPAdapter`` whose every request ends by its timeout and reads at most ``max_bytes``."""

    def __init__(
        self,
        max_bytes: int,
        *,
        truncate: bool = False,
        default_timeout: float = 10.0,
        **kwargs: object,
    ) -> None:
        """``truncate``: keep the first ``max_bytes`` of a longer body instead of failing."""
        self.max_bytes = max_bytes
        self.truncate = truncate
        self.default_timeout = default_timeout
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedPool, "https": _WatchedHTTPSPool}

    def send(self, request, stream=False, timeout=None, **kwargs):  # type: ignore[no-untyped-def]
        seconds = _seconds(timeout, self.default_timeout)
        with Deadline(seconds, request.url or "") as d, under(d):
            try:
                # Always read here, within the deadline (``stream`` or not):
                # a body read later by the caller would have no deadline.
                resp = super().send(request, stream=True, timeout=timeout, **kwargs)
                self._read_capped(resp)
            except AnswerTooLarge:
                raise
            except Exception as e:
                if d.expired:
                    raise requests.Timeout(
                        f"no complete answer within {seconds:g} s", request=request
                    ) from e
                raise
            if d.expired:  # cut short at the deadline but it looked like the end
                resp.close()
                raise requests.Timeout(f"no complete answer within {seconds:g} s", request=request)
        return resp

    def _read_capped(self, resp: requests.Response) -> None:
        length = resp.headers.get("Content-Length", "")
        if not self.truncate and length.isdigit() and int(length) > self.max_bytes:
            resp.close()
            raise AnswerTooLarge(
                f"answer of {int(length)} bytes (Content-Length) is larger than the cap of "
                f"{self.max_bytes} bytes",
                request=resp.request,
            )
        body = bytearray()
        for chunk in resp.iter_content(_CHUNK):
            body += chunk
            if len(body) > self.max_bytes:
                resp.close()
                if self.truncate:
                    del body[self.max_bytes :]
                    break
                raise AnswerTooLarge(
                    f"answer larger than the cap of {self.max_bytes} bytes; stopped reading",
                    request=resp.request,
                )
        resp._content = bytes(body)
        resp._content_consumed = True
