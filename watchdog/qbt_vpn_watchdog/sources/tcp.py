"""One TCP connect from a given namespace: does something answer at host:port?

The port_forward check uses it from *outside* the tunnel's namespace (the
host, or in the lab a namespace on its "internet" side): the SYN goes to the
VPN's exit address and comes back in through AirVPN's port forward. A
completed handshake is qBittorrent (libtorrent) answering; the connection is
closed at once, nothing is sent on it.
"""

from __future__ import annotations

import errno
import socket
import time

from qbt_vpn_watchdog.sources import SourceError, TcpAnswer
from qbt_vpn_watchdog.sources.netns import socket_in


class TcpConnect:
    def connect(self, netns: str | None, host: str, port: int, timeout: float) -> TcpAnswer:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            s = socket_in(netns, family, socket.SOCK_STREAM)
        except OSError as e:
            raise SourceError(f"cannot open a socket: {e.strerror or e}", kind="local") from None
        t0 = time.monotonic()
        try:
            s.settimeout(timeout)
            try:
                s.connect((host, port))
            except TimeoutError:
                return TcpAnswer(
                    host, port, "timeout", time.monotonic() - t0, f"no answer within {timeout:g} s"
                )
            except ConnectionRefusedError:
                return TcpAnswer(host, port, "refused", time.monotonic() - t0, "refused (a RST)")
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                    raise SourceError(f"cannot connect: {e.strerror}", kind="local") from None
                return TcpAnswer(
                    host, port, "unreachable", time.monotonic() - t0, e.strerror or str(e)
                )
            return TcpAnswer(host, port, "connected", time.monotonic() - t0)
        finally:
            s.close()
