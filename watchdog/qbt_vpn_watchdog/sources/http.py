"""One size-capped HTTP(S) GET from inside the namespace.

The TCP socket is created inside the namespace and handed, connected, to
http.client (which then never connects by itself). The host name is resolved
through the resolver and nameserver given (the VPN's DNS): inside a namespace
Python's own resolver would still read the host's /etc/resolv.conf and ask
the host's DNS server, a DNS leak. Redirects are not followed.

The timeout is one deadline for everything (resolving, connecting, the TLS
handshake, headers, body), held by ``deadline.Deadline`` whatever the server
sends and however slowly; the body is capped at ``max_bytes``.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from urllib.parse import urlsplit

from qbt_vpn_watchdog.sources import HttpResponse, SourceError
from qbt_vpn_watchdog.sources.deadline import Deadline
from qbt_vpn_watchdog.sources.netns import socket_in

USER_AGENT = "qbt-vpn-watchdog"
_CHUNK = 16384


class Http:
    def __init__(
        self,
        netns: str | None,
        resolver,  # .query(name, server, timeout) -> DnsAnswer, e.g. sources.dns.Resolver
        nameserver: str | None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.netns = netns
        self.resolver = resolver
        self.nameserver = nameserver
        self._ssl = ssl_context

    def get(self, url: str, timeout: float, max_bytes: int) -> HttpResponse:
        """GET ``url`` within ``timeout`` seconds in all (DNS, connect, TLS, read).

        Raises ``SourceError``: ``timeout``; ``unreachable`` (refused, no route,
        name not resolvable); ``tls`` (handshake or certificate failure);
        ``bad_response`` (not HTTP, body larger than ``max_bytes``).
        """
        t0 = time.monotonic()
        deadline = t0 + timeout
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise SourceError(f"not an http(s) URL: {url!r}", kind="bad_response")
        host = u.hostname
        try:
            port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError:
            raise SourceError(f"bad port in URL {url!r}", kind="bad_response") from None
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        ip = self._address(host, deadline)
        family = socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET
        where = f"{host}:{port}" if ip == host else f"{host} ({ip}) port {port}"

        sock = socket_in(self.netns, family, socket.SOCK_STREAM)
        # The overall deadline: socket timeouts bound one recv each, and a
        # server dripping a byte a second (in the TLS handshake, the headers or
        # the body) would otherwise hold the GET as long as it likes.
        with Deadline(deadline - time.monotonic(), where) as overall:
            overall.watch(sock)
            late = SourceError(
                f"{where} did not answer in full within the timeout ({timeout:g} s)",
                kind="timeout",
            )
            try:
                got = self._get(
                    sock, u.scheme, host, ip, port, path, where, t0, deadline, max_bytes
                )
            except SourceError as e:
                if overall.expired and e.kind != "local_resource":
                    raise late from None
                raise
            finally:
                sock.close()
            if overall.expired:  # cut off at the deadline: what was read is not the answer
                raise late
            return got

    def _get(self, sock, scheme, host, ip, port, path, where, t0, deadline, max_bytes):
        conn = None
        try:
            sock.settimeout(_left(deadline, where))
            try:
                sock.connect((ip, port))
            except TimeoutError:
                raise SourceError(f"connecting to {where} timed out", kind="timeout") from None
            except ConnectionRefusedError:
                raise SourceError(f"connection to {where} refused", kind="unreachable") from None
            except OSError as e:
                raise SourceError(
                    f"cannot connect to {where}: {e.strerror or e}", kind="unreachable"
                ) from None
            if scheme == "https":
                if self._ssl is None:
                    # Built once: loading the system CA store costs milliseconds.
                    self._ssl = ssl.create_default_context()
                ctx = self._ssl
                sock.settimeout(_left(deadline, where))
                try:
                    sock = ctx.wrap_socket(sock, server_hostname=host)  # SNI and hostname check
                except TimeoutError:
                    raise SourceError(
                        f"TLS handshake with {where} timed out", kind="timeout"
                    ) from None
                except ssl.SSLCertVerificationError as e:
                    raise SourceError(
                        f"TLS certificate of {host} rejected: {e.verify_message}", kind="tls"
                    ) from None
                except (ssl.SSLError, ConnectionError) as e:
                    raise SourceError(
                        f"TLS handshake with {where} failed: {e}", kind="tls"
                    ) from None
                conn = http.client.HTTPSConnection(host, port, context=ctx)
            else:
                conn = http.client.HTTPConnection(host, port)
            conn.sock = sock  # pre-connected inside the namespace: http.client must not connect
            return self._exchange(conn, sock, path, where, t0, deadline, max_bytes)
        finally:
            if conn is not None:
                conn.close()

    def _address(self, host: str, deadline: float) -> str:
        try:
            ipaddress.ip_address(host)
            return host  # an IP literal is used as is: nothing to resolve, nothing to leak
        except ValueError:
            pass
        if not self.nameserver:
            raise SourceError(
                f"no nameserver to resolve {host} inside the namespace", kind="unreachable"
            )
        ans = self.resolver.query(host, self.nameserver, _left(deadline, host))
        if ans.rcode != "NOERROR":
            raise SourceError(
                f"cannot resolve {host} via {self.nameserver}: {ans.rcode}", kind="unreachable"
            )
        if not ans.addresses:
            raise SourceError(f"{host} has no address (via {self.nameserver})", kind="unreachable")
        return ans.addresses[0]

    def _exchange(self, conn, sock, path, where, t0, deadline, max_bytes) -> HttpResponse:
        try:
            sock.settimeout(_left(deadline, where))
            conn.request(
                "GET",
                path,
                headers={
                    "User-Agent": USER_AGENT,
                    "Accept": "application/json",
                    "Connection": "close",
                },
            )
            resp = conn.getresponse()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise SourceError(
                    f"response larger than {max_bytes} bytes"
                    f" (Content-Length {length}) from {where}",
                    kind="bad_response",
                )
            body = bytearray()
            while len(body) <= max_bytes:
                sock.settimeout(_left(deadline, where))
                # read1: at most one recv, so a server dripping bytes cannot
                # hold us past the deadline (read(n) blocks until n bytes).
                chunk = resp.read1(min(_CHUNK, max_bytes + 1 - len(body)))
                if not chunk:
                    break
                body += chunk
            if len(body) > max_bytes:
                raise SourceError(
                    f"response larger than {max_bytes} bytes from {where}", kind="bad_response"
                )
        except TimeoutError:
            raise SourceError(
                f"{where} did not answer within the timeout", kind="timeout"
            ) from None
        except http.client.HTTPException as e:
            raise SourceError(
                f"bad HTTP response from {where}: {type(e).__name__} {e}", kind="bad_response"
            ) from None
        except ssl.SSLError as e:
            raise SourceError(f"TLS error talking to {where}: {e}", kind="tls") from None
        except OSError as e:
            raise SourceError(
                f"connection to {where} failed: {e.strerror or e}", kind="unreachable"
            ) from None
        return HttpResponse(resp.status, headers, bytes(body), time.monotonic() - t0)


def _left(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise SourceError(f"{what}: no time left within the timeout", kind="timeout")
    return left
