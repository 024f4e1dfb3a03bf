"""Two network namespaces joined by a veth, each with a real wireguard-go interface.

    ns <p>-a                          ns <p>-b
    <p>a0 10.99.0.1/24  ==tunnel==>   <p>b0 10.99.0.2/24
    <p>va 172.31.99.1/30 --veth--    <p>vb 172.31.99.2/30

where <p> is the caller's prefix and this test session's token
(tests/support/session_names.py): "qvw" -> "qvw1a2b".

Nothing is routed to the root namespace or the real network: the namespaces
hold only lo, the veth and the WireGuard interface. wireguard-go's UAPI socket
path (/var/run/wireguard/NAME.sock) is global, so interface names carry the
prefix and the session token too, and ``down()`` removes only the namespaces
and sockets this pair created. Reuse it with your own prefix::

    from tests.support.wg_pair import WgPair, wg_pair_fixture

    abc_pair = wg_pair_fixture("abc")          # a module-scoped fixture, or
    pair = WgPair("abc").up(); ...; pair.down()

``WgPair(prefix, kernel=True)`` uses the kernel's WireGuard instead (only in
the kernel VM, tests/vm: this machine's kernel has no module); ``restart_tunnels()``
re-creates both interfaces, so their peer counters start again from 0.

Traffic is a UDP echo inside the namespaces (no ping binary here): ``echo()``
sends datagrams from a to b's echo server and waits for each answer, which
establishes the handshake and moves both peer and interface counters.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from pyroute2 import netns as pr_netns

from tests.support.session_names import SESSION

UAPI_DIR = Path("/var/run/wireguard")
ECHO_PORT = 7777


def _run(*cmd: str, input: str | None = None) -> str:
    p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=10)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


class WgPair:
    def __init__(self, prefix: str = "qvw", kernel: bool = False) -> None:
        prefix = f"{prefix}{SESSION}"
        self.prefix = prefix
        self.kernel = kernel
        self.ns_a, self.ns_b = f"{prefix}-a", f"{prefix}-b"
        self.wg_a, self.wg_b = f"{prefix}a0", f"{prefix}b0"
        self.veth_a, self.veth_b = f"{prefix}va", f"{prefix}vb"
        for n in (self.wg_a, self.wg_b, self.veth_a, self.veth_b):
            assert len(n) <= 15, n
        self.under_a, self.under_b = "172.31.99.1", "172.31.99.2"
        self.tun_a, self.tun_b = "10.99.0.1", "10.99.0.2"
        self.port_a, self.port_b = 51801, 51802
        self.keepalive_a = 25
        self.procs: list[subprocess.Popen] = []
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-wgpair-"))
        self.private_a = self.private_b = self.public_a = self.public_b = ""
        self._echo_sock: socket.socket | None = None
        self._echo_thread: threading.Thread | None = None
        self._made: list[str] = []  # namespaces this pair created

    # --- lifecycle -------------------------------------------------------------

    def up(self) -> WgPair:
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            if Path("/run/netns", ns).exists():
                raise RuntimeError(f"namespace {ns} already exists (not ours: left alone)")
            _run("ip", "netns", "add", ns)
            self._made.append(ns)
        _run("ip", "link", "add", self.veth_a, "netns", self.ns_a, "type", "veth",
             "peer", "name", self.veth_b, "netns", self.ns_b)  # fmt: skip
        for ns, veth, addr in (
            (self.ns_a, self.veth_a, self.under_a),
            (self.ns_b, self.veth_b, self.under_b),
        ):
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", veth)
            _run("ip", "-n", ns, "link", "set", veth, "up")

        self.private_a, self.private_b = _run("wg", "genkey").strip(), _run("wg", "genkey").strip()
        self.public_a = _run("wg", "pubkey", input=self.private_a).strip()
        self.public_b = _run("wg", "pubkey", input=self.private_b).strip()
        for name, key in (("a", self.private_a), ("b", self.private_b)):
            f = self.tmp / f"{name}.key"
            f.touch(mode=0o600)
            f.write_text(key + "\n")

        self._make_tunnels()
        self._start_echo()

    def _make_tunnels(self) -> None:
        if self.kernel:
            for ns, wg in ((self.ns_a, self.wg_a), (self.ns_b, self.wg_b)):
                _run("ip", "-n", ns, "link", "add", wg, "type", "wireguard")
        else:
            self._start_wireguard_go()
        # b first: a's persistent keepalive sends an initiation at once, and one
        # lost to an unconfigured b would delay the handshake by REKEY_TIMEOUT (5 s).
        self.wg(self.ns_b, "set", self.wg_b, "private-key", str(self.tmp / "b.key"),
                "listen-port", str(self.port_b),
                "peer", self.public_a, "allowed-ips", f"{self.tun_a}/32")  # fmt: skip
        self.wg(self.ns_a, "set", self.wg_a, "private-key", str(self.tmp / "a.key"),
                "listen-port", str(self.port_a),
                "peer", self.public_b, "endpoint", f"{self.under_b}:{self.port_b}",
                "allowed-ips", f"{self.tun_b}/32,10.99.1.0/24",
                "persistent-keepalive", str(self.keepalive_a))  # fmt: skip
        for ns, wg, addr in (  # b up first too: a's first initiation goes out as a comes up
            (self.ns_b, self.wg_b, self.tun_b),
            (self.ns_a, self.wg_a, self.tun_a),
        ):
            _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", wg)
            _run("ip", "-n", ns, "link", "set", wg, "up")

    def _start_wireguard_go(self) -> None:
        for ns, wg in ((self.ns_a, self.wg_a), (self.ns_b, self.wg_b)):
            log = open(self.tmp / f"{wg}.log", "wb")  # noqa: SIM115 - lives as long as the process
            # `ip netns exec` execs wireguard-go in place, so this PID is wireguard-go's.
            self.procs.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", ns, "wireguard-go", "-f", wg],
                    stdout=log,
                    stderr=log,
                    stdin=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 5
        while not all(self.uapi_path(w).exists() for w in (self.wg_a, self.wg_b)):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                logs = " | ".join(
                    (self.tmp / f"{w}.log").read_text()[-300:] for w in (self.wg_a, self.wg_b)
                )
                raise RuntimeError(f"wireguard-go did not start: {logs}")
            time.sleep(0.01)

    def restart_tunnels(self) -> None:
        """Delete and re-create both WireGuard interfaces (kernel only): counters from 0."""
        assert self.kernel, "restart_tunnels() is for the kernel's WireGuard"
        for ns, wg in ((self.ns_a, self.wg_a), (self.ns_b, self.wg_b)):
            _run("ip", "-n", ns, "link", "del", wg)
        self._make_tunnels()

    @staticmethod
    def wg(ns: str, *args: str) -> str:
        """`wg ARGS` inside ``ns`` (the kernel's interfaces are seen only there)."""
        return _run("ip", "netns", "exec", ns, "wg", *args)

    def down(self) -> None:
        if self._echo_sock is not None:
            self._echo_sock.close()
            self._echo_sock = None
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=3)
        self.procs.clear()
        for ns in self._made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        if self._made:  # the interfaces (and their sockets) are ours only if the namespaces are
            for wg in (self.wg_a, self.wg_b):
                self.uapi_path(wg).unlink(missing_ok=True)
        self._made = []
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- helpers ---------------------------------------------------------------

    @staticmethod
    def uapi_path(wg: str) -> Path:
        return UAPI_DIR / f"{wg}.sock"

    def _start_echo(self) -> None:
        s = pr_netns.create_socket(self.ns_b, socket.AF_INET, socket.SOCK_DGRAM, flags=0)
        s.bind((self.tun_b, ECHO_PORT))
        self._echo_sock = s

        def serve() -> None:
            while True:
                try:
                    data, addr = s.recvfrom(65535)
                    s.sendto(data, addr)
                except OSError:
                    return  # closed by down()

        self._echo_thread = threading.Thread(target=serve, name=f"{self.prefix}-echo", daemon=True)
        self._echo_thread.start()

    def echo(self, count: int = 1, size: int = 100, timeout: float = 3.0) -> None:
        """Send ``count`` datagrams a -> b through the tunnel and wait for each echo."""
        s = pr_netns.create_socket(self.ns_a, socket.AF_INET, socket.SOCK_DGRAM, flags=0)
        try:
            s.settimeout(timeout)
            for i in range(count):
                payload = i.to_bytes(4, "big") * (size // 4)
                # The first datagram can be dropped while the handshake completes
                # (wireguard-go queues a few, but be robust): resend until answered.
                deadline = time.monotonic() + timeout
                while True:
                    s.sendto(payload, (self.tun_b, ECHO_PORT))
                    try:
                        s.settimeout(0.3)
                        if s.recv(65535) == payload:
                            break
                    except TimeoutError:
                        if time.monotonic() > deadline:
                            raise
        finally:
            s.close()

    def dump(self, wg: str) -> list[list[str]]:
        """`wg show WG dump`: first row the interface, then one row per peer."""
        ns = self.ns_a if wg == self.wg_a else self.ns_b
        return [line.split("\t") for line in self.wg(ns, "show", wg, "dump").splitlines()]


def wg_pair_fixture(prefix: str, scope: str = "module", kernel: bool = False):
    """A pytest fixture yielding a running WgPair named with ``prefix``.

    In a test module: ``my_pair = wg_pair_fixture("abc")``.
    """

    @pytest.fixture(scope=scope)
    def fixture():
        if os.geteuid() != 0:
            pytest.skip("needs root (network namespaces)")
        pair = WgPair(prefix, kernel=kernel).up()
        try:
            yield pair
        finally:
            pair.down()

    return fixture
