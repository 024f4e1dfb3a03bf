"""WireGuard peer state from the kernel (generic netlink) or a userspace daemon (UAPI).

Two readers with one interface, ``.read() -> WgDevice`` and
``.set_endpoint(public_key, "ip:port")``:

* ``UapiReader``: the cross-platform UAPI socket ``/var/run/wireguard/<if>.sock``
  served by wireguard-go and boringtun. The path is global, not per network
  namespace, so this works from the root namespace for an interface that lives
  in another one.
* ``KernelReader``: the kernel module through pyroute2's generic netlink
  ``WireGuard`` socket, opened inside the namespace (``netns=..., flags=0`` so a
  typo never creates a namespace). The attribute parsing is the pure function
  ``device_from_messages`` so it is tested without the module.

Secrets: both interfaces hand out the private key (and preshared keys) to
root. They are skipped while parsing and never stored, logged or put in an
error message.
"""

from __future__ import annotations

import base64
import binascii
import errno as errnos
import ipaddress
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qbt_vpn_watchdog.sources import SourceError, WgDevice, WgPeer, os_error
from qbt_vpn_watchdog.sources.netns import netns_ident

if TYPE_CHECKING:
    from qbt_vpn_watchdog.config import Config

UAPI_DIR = "/var/run/wireguard"
# A UAPI answer is ~300 bytes per peer plus 20 per allowed IP; a cap stops a
# broken or hostile socket from filling memory.
MAX_UAPI_BYTES = 1 << 20
_SECRET_KEYS = frozenset({"private_key", "preshared_key"})


# --- small parsers shared by both readers ------------------------------------


def public_key_to_hex(public_key_b64: str) -> str:
    """Base64 (as `wg` prints it) -> the hex form UAPI uses. ValueError if not a 32-byte key."""
    try:
        raw = base64.b64decode(public_key_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("public key is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"public key is {len(raw)} bytes, expected 32")
    return raw.hex()


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """``"ip:port"`` or ``"[ipv6]:port"`` -> (ip, port).

    Only literal addresses: resolving a hostname endpoint such as
    ``europe.vpn.airdns.org:1637`` is the caller's job (and needs a resolver
    that works while the tunnel may be down).
    """
    host, sep, port_s = endpoint.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"endpoint {endpoint!r} is not ip:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"endpoint {endpoint!r}: {host!r} is not an IP address (resolve hostnames first)"
        ) from None
    return str(ip), int(port_s)


def format_endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _handshake(sec: int, nsec: int) -> float | None:
    # WireGuard reports 0.0 for "never": there is no handshake at the epoch.
    if sec == 0 and nsec == 0:
        return None
    return sec + nsec / 1e9


# --- UAPI ---------------------------------------------------------------------

# Keys of the device section and of a peer section we read; others (fwmark,
# protocol_version, future additions) are accepted and ignored.
_UAPI_INT_PEER_KEYS = (
    "last_handshake_time_sec",
    "last_handshake_time_nsec",
    "rx_bytes",
    "tx_bytes",
    "persistent_keepalive_interval",
)


def parse_uapi_get(text: str, interface: str) -> WgDevice:
    """Parse the answer to ``get=1`` (without the final blank line).

    Raises SourceError: ``bad_response`` for anything that breaks the protocol,
    ``unreachable`` for a non-zero ``errno`` from the daemon.
    """
    where = f"UAPI answer for {interface}"
    lines = text.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise SourceError(f"{where}: empty", kind="bad_response")
    listen_port: int | None = None
    peers: list[dict[str, Any]] = []
    err: int | None = None
    for n, line in enumerate(lines, 1):
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise SourceError(f"{where}: line {n} is not key=value", kind="bad_response")
        if err is not None:
            raise SourceError(f"{where}: line {n} ({key}) after errno", kind="bad_response")
        if key in _SECRET_KEYS:
            continue  # never parsed, never kept, never quoted
        if key == "errno":
            err = _uapi_int(value, key, where)
        elif key == "public_key":
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise SourceError(
                    f"{where}: line {n}: public_key is not 64 hex digits", kind="bad_response"
                )
            peers.append({"public_key": base64.b64encode(raw).decode(), "allowed_ips": []})
        elif key == "listen_port":
            if peers:
                raise SourceError(
                    f"{where}: listen_port inside a peer section", kind="bad_response"
                )
            listen_port = _uapi_int(value, key, where)
        elif key in _UAPI_INT_PEER_KEYS or key in ("endpoint", "allowed_ip"):
            if not peers:
                raise SourceError(f"{where}: {key} before any public_key", kind="bad_response")
            peer = peers[-1]
            if key == "endpoint":
                try:
                    peer["endpoint"] = format_endpoint(*parse_endpoint(value))
                except ValueError as e:
                    raise SourceError(f"{where}: {e}", kind="bad_response") from None
            elif key == "allowed_ip":
                try:
                    peer["allowed_ips"].append(str(ipaddress.ip_network(value, strict=False)))
                except ValueError:
                    raise SourceError(
                        f"{where}: allowed_ip {value[:50]!r} is not a prefix", kind="bad_response"
                    ) from None
            else:
                peer[key] = _uapi_int(value, key, where)
    if err is None:
        raise SourceError(f"{where}: ended without errno", kind="bad_response")
    if err != 0:
        raise SourceError(
            f"{where}: the daemon answered errno={err} ({os.strerror(err)})", kind="unreachable"
        )
    out = []
    for p in peers:
        for k in ("rx_bytes", "tx_bytes"):
            if k not in p:
                raise SourceError(
                    f"{where}: peer {p['public_key']} has no {k}", kind="bad_response"
                )
        out.append(
            WgPeer(
                public_key=p["public_key"],
                endpoint=p.get("endpoint"),
                last_handshake=_handshake(
                    p.get("last_handshake_time_sec", 0), p.get("last_handshake_time_nsec", 0)
                ),
                rx_bytes=p["rx_bytes"],
                tx_bytes=p["tx_bytes"],
                allowed_ips=tuple(p["allowed_ips"]),
                persistent_keepalive=p.get("persistent_keepalive_interval") or None,
            )
        )
    return WgDevice(interface=interface, reader="uapi", listen_port=listen_port, peers=tuple(out))


def _uapi_int(value: str, key: str, where: str) -> int:
    if not value.isdigit():
        raise SourceError(
            f"{where}: {key}={value[:30]!r} is not a whole number", kind="bad_response"
        )
    return int(value)


class UapiReader:
    """Reads a userspace WireGuard device (wireguard-go, boringtun) over its UAPI socket.

    One short connection per call: the socket is local and a connect costs
    microseconds, and a fresh connection never inherits a half-read answer.
    """

    kind = "uapi"

    def __init__(self, interface: str, uapi_dir: str = UAPI_DIR, timeout: float = 2.0) -> None:
        self.interface = interface
        self.path = Path(uapi_dir) / f"{interface}.sock"
        self.timeout = timeout

    def _exchange(self, request: bytes) -> str:
        # Opened inside the error handling: out of file descriptors (a flood on
        # the metrics port) is a LocalResourceError, never "unreachable".
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as e:
            raise os_error(e, f"UAPI socket {self.path}") from None
        try:
            s.settimeout(self.timeout)
            try:
                s.connect(str(self.path))
            except FileNotFoundError:
                raise SourceError(
                    f"no UAPI socket {self.path}: no userspace WireGuard serves {self.interface}",
                    kind="missing",
                ) from None
            except ConnectionRefusedError:
                raise SourceError(
                    f"UAPI socket {self.path} refuses connections (stale socket: daemon gone?)",
                    kind="unreachable",
                ) from None
            s.sendall(request)
            buf = bytearray()
            # One deadline for the whole answer: each recv gets what is left,
            # so a daemon dripping bytes cannot hold the read past it.
            deadline = time.monotonic() + self.timeout
            while b"\n\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                s.settimeout(left)
                chunk = s.recv(65536)
                if not chunk:
                    raise SourceError(
                        f"UAPI socket {self.path} closed the connection mid-answer",
                        kind="bad_response",
                    )
                buf += chunk
                if len(buf) > MAX_UAPI_BYTES:
                    raise SourceError(
                        f"UAPI answer from {self.path} exceeds {MAX_UAPI_BYTES} bytes",
                        kind="bad_response",
                    )
        except TimeoutError:
            raise SourceError(
                f"UAPI socket {self.path}: no complete answer within {self.timeout:g} s",
                kind="timeout",
            ) from None
        except SourceError:
            raise
        except OSError as e:
            raise os_error(e, f"UAPI socket {self.path}") from None
        finally:
            s.close()
        try:
            return bytes(buf[: buf.index(b"\n\n") + 1]).decode("ascii")
        except UnicodeDecodeError:
            raise SourceError(
                f"UAPI answer from {self.path} is not ASCII text", kind="bad_response"
            ) from None

    def read(self) -> WgDevice:
        return parse_uapi_get(self._exchange(b"get=1\n\n"), self.interface)

    def set_endpoint(self, public_key_b64: str, endpoint: str) -> None:
        """Set a peer's endpoint (``ip:port`` only; ValueError for a hostname or a bad key).

        ``update_only`` keeps a wrong key from silently creating a new peer; the
        read before it turns "no such peer" into a SourceError(kind="missing").
        """
        key_hex = public_key_to_hex(public_key_b64)
        ip, port = parse_endpoint(endpoint)
        if not any(p.public_key == public_key_b64 for p in self.read().peers):
            raise SourceError(f"{self.interface} has no peer {public_key_b64}", kind="missing")
        ep = format_endpoint(ip, port)
        req = f"set=1\npublic_key={key_hex}\nupdate_only=true\nendpoint={ep}\n\n"
        answer = self._exchange(req.encode())
        if answer.strip() != "errno=0":
            first = answer.strip().split("\n")[-1][:40]
            raise SourceError(f"UAPI set on {self.interface} failed: {first}", kind="unreachable")

    def close(self) -> None:
        pass


# --- kernel (generic netlink) ------------------------------------------------


def device_from_messages(msgs: Iterable[Any], interface: str | None = None) -> WgDevice:
    """Turn the messages of a WG_CMD_GET_DEVICE dump (pyroute2 ``wgmsg``) into a WgDevice.

    The kernel splits a large device over several messages: device attributes
    come in the first, peers follow, and a peer whose allowed IPs do not fit is
    continued in the next message by a peer entry carrying only its public key
    and the remaining allowed IPs. Entries for the same key are merged.
    Raises SourceError(kind="bad_response") for a message it cannot use.
    """
    name = interface
    listen_port: int | None = None
    order: list[str] = []
    peers: dict[str, dict[str, Any]] = {}
    seen = False
    for msg in msgs:
        get = getattr(msg, "get_attr", None)
        if get is None:
            raise SourceError(
                f"netlink: unexpected {type(msg).__name__} in a WireGuard dump", kind="bad_response"
            )
        if msg.get("header", {}).get("error") is not None:
            raise SourceError(
                f"netlink: error message in a WireGuard dump: {msg['header']['error']}",
                kind="bad_response",
            )
        seen = True
        name = get("WGDEVICE_A_IFNAME") or name
        port = get("WGDEVICE_A_LISTEN_PORT")
        if port is not None:
            listen_port = port or None
        for entry in get("WGDEVICE_A_PEERS") or ():
            pget = entry.get_attr
            key = _key_b64(pget("WGPEER_A_PUBLIC_KEY"))
            if key not in peers:
                order.append(key)
                peers[key] = {"allowed_ips": []}
            p = peers[key]
            ep = pget("WGPEER_A_ENDPOINT")
            if ep is not None:
                try:
                    p["endpoint"] = format_endpoint(ep["addr"], int(ep["port"]))
                except (KeyError, TypeError, ValueError):
                    raise SourceError(
                        f"netlink: peer {key}: unreadable endpoint", kind="bad_response"
                    ) from None
            hs = pget("WGPEER_A_LAST_HANDSHAKE_TIME")
            if hs is not None:
                p["last_handshake"] = _handshake(int(hs["tv_sec"]), int(hs["tv_nsec"]))
            for attr, k in (("WGPEER_A_RX_BYTES", "rx_bytes"), ("WGPEER_A_TX_BYTES", "tx_bytes")):
                v = pget(attr)
                if v is not None:
                    p[k] = int(v)
            ka = pget("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL")
            if ka is not None:
                p["persistent_keepalive"] = int(ka) or None
            for aip in pget("WGPEER_A_ALLOWEDIPS") or ():
                p["allowed_ips"].append(_allowed_ip(aip, key))
    if not seen:
        raise SourceError("netlink: empty WireGuard dump", kind="bad_response")
    out = []
    for key in order:
        p = peers[key]
        for k in ("rx_bytes", "tx_bytes"):
            if k not in p:
                raise SourceError(f"netlink: peer {key} has no {k}", kind="bad_response")
        out.append(
            WgPeer(
                public_key=key,
                endpoint=p.get("endpoint"),
                last_handshake=p.get("last_handshake"),
                rx_bytes=p["rx_bytes"],
                tx_bytes=p["tx_bytes"],
                allowed_ips=tuple(p["allowed_ips"]),
                persistent_keepalive=p.get("persistent_keepalive"),
            )
        )
    return WgDevice(
        interface=name or "", reader="kernel", listen_port=listen_port, peers=tuple(out)
    )


def _key_b64(value: Any) -> str:
    # pyroute2 decodes keys to base64 bytes; accept str too (recorded fixtures).
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        raise SourceError("netlink: peer without a public key", kind="bad_response")
    try:
        public_key_to_hex(value)
    except ValueError as e:
        raise SourceError(f"netlink: {e}", kind="bad_response") from None
    return value


def _allowed_ip(aip: Any, key: str) -> str:
    addr = aip.get("addr") if hasattr(aip, "get") else None
    if addr is None:  # pyroute2 computes "addr"; rebuild it if a message lacks it
        try:
            fam = aip.get_attr("WGALLOWEDIP_A_FAMILY")
            raw = bytes.fromhex(aip.get_attr("WGALLOWEDIP_A_IPADDR").replace(":", ""))
            addr = f"{socket.inet_ntop(fam, raw)}/{aip.get_attr('WGALLOWEDIP_A_CIDR_MASK')}"
        except (AttributeError, TypeError, ValueError, OSError):
            raise SourceError(
                f"netlink: peer {key}: unreadable allowed IP", kind="bad_response"
            ) from None
    try:
        return str(ipaddress.ip_network(addr, strict=False))
    except ValueError:
        raise SourceError(
            f"netlink: peer {key}: bad allowed IP {addr!r}", kind="bad_response"
        ) from None


def _pyroute2() -> tuple[type, type]:
    """pyroute2's WireGuard socket class (closed when its constructor fails) and NetlinkError.

    Only the modules it uses, not pyroute2's package ``__init__``
    (``netlink_thread.pyroute2_module``). Without the module (or in a vanished
    namespace) the socket's constructor raises after opening a socket and an
    event loop: one leaked descriptor per cycle, hence ``closed_on_failure``.
    """
    from qbt_vpn_watchdog.sources.netlink_thread import (
        NetlinkError,
        closed_on_failure,
        pyroute2_module,
    )

    wireguard = pyroute2_module("pyroute2.netlink.generic.wireguard")
    return closed_on_failure(wireguard.WireGuard), NetlinkError


class KernelReader:
    """Reads a kernel WireGuard device through generic netlink inside ``netns``.

    One netlink socket per reader, owned by one thread (see netlink_thread).
    """

    kind = "kernel"

    def __init__(self, interface: str, netns: str | None = None, timeout: float = 5.0) -> None:
        self.interface = interface
        self.netns = netns
        self._where = f"{interface} in namespace {netns}" if netns else interface
        self._socket_class, self._error = _pyroute2()
        from qbt_vpn_watchdog.sources.netlink_thread import NetlinkThread

        self._nl = NetlinkThread(
            self._open, netns=netns, name=f"wg-netlink-{interface}", timeout=timeout
        )

    def _open(self) -> Any:
        try:
            # flags=0: never create the namespace (NetlinkThread checked it exists).
            wg = self._socket_class
            return wg(netns=self.netns, flags=0) if self.netns else wg()
        except FileNotFoundError:  # deleted since NetlinkThread checked it
            netns_ident(self.netns)
            raise SourceError(
                f"cannot enter network namespace {self.netns}", kind="missing"
            ) from None
        except self._error as e:
            if e.code == errnos.ENOENT:
                raise SourceError(
                    "the kernel has no WireGuard generic netlink family (module not loaded?); "
                    'for wireguard-go or boringtun use wireguard.reader = "uapi"',
                    kind="missing",
                ) from None
            raise SourceError(f"WireGuard netlink: {e}", kind="unreachable") from None
        except OSError as e:
            raise SourceError(
                f"WireGuard netlink socket: {e.strerror or e}", kind="unreachable"
            ) from None

    def _netlink_error(self, e: Any) -> SourceError:
        if e.code == errnos.ENODEV:
            return SourceError(f"no interface {self._where}", kind="missing")
        if e.code == errnos.EOPNOTSUPP:
            return SourceError(f"{self._where} is not a WireGuard interface", kind="missing")
        if e.code == errnos.EPERM:
            return SourceError(
                f"WireGuard netlink on {self._where}: needs CAP_NET_ADMIN", kind="unreachable"
            )
        return SourceError(
            f"WireGuard netlink on {self._where}: {os.strerror(e.code)}", kind="unreachable"
        )

    def read(self) -> WgDevice:
        try:
            msgs = self._nl.call(
                lambda wg: list(wg.info(self.interface)), f"WireGuard read of {self._where}"
            )
        except self._error as e:
            raise self._netlink_error(e) from None
        dev = device_from_messages(msgs, self.interface)
        del msgs  # they hold the private key; do not keep them longer than needed
        return dev

    def set_endpoint(self, public_key_b64: str, endpoint: str) -> None:
        """Set a peer's endpoint (``ip:port`` only). WGPEER_F_UPDATE_ONLY: never adds a peer."""
        public_key_to_hex(public_key_b64)
        ip, port = parse_endpoint(endpoint)
        if not any(p.public_key == public_key_b64 for p in self.read().peers):
            raise SourceError(f"{self._where} has no peer {public_key_b64}", kind="missing")
        peer = peer_endpoint_update(public_key_b64, ip, port)
        try:
            self._nl.call(
                lambda wg: wg.set(self.interface, peer=peer), f"WireGuard set on {self._where}"
            )
        except self._error as e:
            raise self._netlink_error(e) from None

    def close(self) -> None:
        self._nl.close()


def peer_endpoint_update(public_key_b64: str, ip: str, port: int) -> dict[str, Any]:
    """The pyroute2 ``WireGuard.set(peer=...)`` argument that changes only the endpoint."""
    return {
        "public_key": public_key_b64,
        "endpoint_addr": ip,
        "endpoint_port": port,
        "update_only": True,
    }


# --- choosing a reader --------------------------------------------------------


class AutoReader:
    """``wireguard.reader = "auto"``: UAPI when its socket file exists, else the kernel.

    Decided on every call (a stat), so a daemon started after the watchdog is
    picked up without a restart.
    """

    def __init__(self, uapi: UapiReader, kernel: KernelReader) -> None:
        self.uapi = uapi
        self.kernel = kernel

    def _pick(self) -> UapiReader | KernelReader:
        return self.uapi if self.uapi.path.exists() else self.kernel

    def read(self) -> WgDevice:
        return self._pick().read()

    def set_endpoint(self, public_key_b64: str, endpoint: str) -> None:
        self._pick().set_endpoint(public_key_b64, endpoint)

    def close(self) -> None:
        self.kernel.close()


def make_reader(cfg: Config) -> UapiReader | KernelReader | AutoReader:
    wg = cfg.wireguard
    if wg.reader == "uapi":
        return UapiReader(wg.interface, wg.uapi_dir)
    if wg.reader == "kernel":
        return KernelReader(wg.interface, cfg.netns)
    return AutoReader(UapiReader(wg.interface, wg.uapi_dir), KernelReader(wg.interface, cfg.netns))
