"""Namespaces, servers and certificates for the DNS/HTTP probe tests.

Everything here lives inside namespaces the tests create (names start with
``qvp``) and is torn down in ``finally``. Servers listen only inside those
namespaces; nothing is ever sent from the root namespace except to loopback.
"""

from __future__ import annotations

import contextlib
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
import time

import dns.message
import dns.query

from qbt_vpn_watchdog.sources.netns import socket_in


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def _del_ns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextlib.contextmanager
def netns(name: str):
    """A fresh namespace with only ``lo`` up; deleted afterwards.

    ``name`` is this session's own (tests.support.session_names.unique): one that
    exists already belongs to someone else, so ``ip netns add`` fails and it
    is left alone.
    """
    assert name.startswith("qvp-")
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        _del_ns(name)


def veth(ns_a: str, if_a: str, addr_a: str, ns_b: str, if_b: str, addr_b: str) -> None:
    """A veth pair between two of our namespaces (gone when either namespace is deleted)."""
    assert if_a.startswith("qvp") and if_b.startswith("qvp")
    sh("ip", "-n", ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
    sh("ip", "-n", ns_a, "addr", "add", addr_a, "dev", if_a)
    sh("ip", "-n", ns_b, "addr", "add", addr_b, "dev", if_b)
    sh("ip", "-n", ns_a, "link", "set", if_a, "up")
    sh("ip", "-n", ns_b, "link", "set", if_b, "up")


@contextlib.contextmanager
def dnsmasq(ns: str, listen: str, port: int, *records: str):
    """A real dnsmasq inside ``ns``; ``records`` are extra options like ``--address=/x/1.2.3.4``.

    Without upstream servers (--no-resolv, no --server) it answers REFUSED
    for names it does not know.
    """
    cmd = [
        "ip", "netns", "exec", ns,
        shutil.which("dnsmasq") or "/usr/sbin/dnsmasq",
        "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--pid-file", "--bind-interfaces", f"--listen-address={listen}", f"--port={port}",
        "--user=root", "--cache-size=0",
        *records,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_dns(ns, listen, port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_dns(ns: str, server: str, port: int, proc: subprocess.Popen) -> None:
    q = dns.message.make_query("ready.invalid", "A")
    end = time.monotonic() + 5
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"dnsmasq exited: {proc.stderr.read().decode(errors='replace')}")
        s = socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            dns.query.udp(q, server, timeout=0.2, port=port, sock=s)
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.05)
        finally:
            s.close()
    raise RuntimeError("dnsmasq did not answer within 5 s")


@contextlib.contextmanager
def udp_server(ns: str, addr: str, port: int, handler):
    """A tiny DNS-ish UDP server in ``ns``: ``handler(bytes) -> bytes | None`` per datagram."""
    sock = socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    sock.settimeout(0.1)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = handler(data)
            if reply is not None:
                sock.sendto(reply, peer)

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    try:
        yield sock
    finally:
        stop.set()
        th.join(2)
        sock.close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that time out on purpose break pipes: not worth a traceback


@contextlib.contextmanager
def http_server(ns: str, addr: str, port: int, handler_cls, tls: ssl.SSLContext | None = None):
    """``http.server`` in a thread, its listening socket created inside ``ns``."""
    srv = _Server((addr, port), handler_cls, bind_and_activate=False)
    srv.socket.close()
    srv.socket = socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    srv.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if tls is not None:
        srv.socket = tls.wrap_socket(srv.socket, server_side=True)
    srv.server_bind()
    srv.server_activate()
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(2)


def self_signed_cert(tmpdir, name: str, ip: str) -> tuple[str, str]:
    """(cert, key) paths of a one-day self-signed cert for ``name`` and ``ip`` (openssl CLI)."""
    cert, key = str(tmpdir / "cert.pem"), str(tmpdir / "key.pem")
    sh(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", f"/CN={name}",
        "-addext", f"subjectAltName=DNS:{name},IP:{ip}",
    )  # fmt: skip
    return cert, key


def ns_exists(name: str) -> bool:
    return name in sh("ip", "netns", "list").split()
