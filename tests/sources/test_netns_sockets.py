"""socket_in: sockets made inside a namespace, never creating one; resolv.conf parsing."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from pyroute2 import netns as pr_netns

from qbt_vpn_watchdog.sources import SourceError
from qbt_vpn_watchdog.sources.netns import _first_nameserver, resolv_conf_nameserver, socket_in
from tests.support.netns_helpers import netns, ns_exists
from tests.support.session_names import unique

NS = unique("qvp-ns")


@pytest.fixture(scope="module")
def ns():
    with netns(NS) as name:
        yield name


@pytest.mark.root
def test_socket_lives_in_the_namespace(ns):
    # A server bound inside the namespace is reachable from a client socket made
    # inside it, and not from a socket of the root namespace on the same address.
    srv = socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    try:
        cli = socket_in(ns, socket.AF_INET, socket.SOCK_STREAM)
        cli.settimeout(2)
        cli.connect(("127.0.0.1", port))
        conn, _ = srv.accept()
        cli.sendall(b"hi")
        assert conn.recv(2) == b"hi"
        conn.close()
        cli.close()
        root = socket.socket()
        root.settimeout(2)
        with pytest.raises(ConnectionRefusedError):
            root.connect(("127.0.0.1", port))  # root loopback only: safe
        root.close()
    finally:
        srv.close()


@pytest.mark.root
def test_thread_is_back_in_its_namespace(ns):
    before = os.stat("/proc/thread-self/ns/net").st_ino
    socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM).close()
    assert os.stat("/proc/thread-self/ns/net").st_ino == before
    assert os.stat(f"/run/netns/{ns}").st_ino != before


@pytest.mark.root
def test_concurrent_threads_do_not_disturb_each_other(ns):
    # Checks run in threads: a switch in one must not move another thread.
    home = os.stat("/proc/thread-self/ns/net").st_ino
    seen: list[int] = []
    stop = threading.Event()

    def watcher():
        while not stop.is_set():
            seen.append(os.stat("/proc/thread-self/ns/net").st_ino)

    th = threading.Thread(target=watcher)
    th.start()
    try:
        for _ in range(200):
            socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM).close()
    finally:
        stop.set()
        th.join()
    assert seen and set(seen) == {home}


@pytest.mark.root
def test_missing_namespace_is_an_error_and_never_created():
    name = "qvp-missing-typo"
    assert not ns_exists(name)
    with pytest.raises(SourceError) as ei:
        socket_in(name, socket.AF_INET, socket.SOCK_DGRAM)
    assert ei.value.kind == "missing"
    assert name in str(ei.value)
    assert not os.path.exists(f"/run/netns/{name}")
    assert not ns_exists(name)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".."])
def test_path_like_names_are_rejected(bad):
    with pytest.raises(SourceError) as ei:
        socket_in(bad, socket.AF_INET, socket.SOCK_DGRAM)
    assert ei.value.kind == "missing"


@pytest.mark.root
def test_a_file_that_is_not_a_namespace_is_missing(tmp_path, monkeypatch):
    import qbt_vpn_watchdog.sources.netns as m

    (tmp_path / "qvp-notns").write_text("")
    monkeypatch.setattr(m, "NETNS_RUN_DIR", str(tmp_path))
    with pytest.raises(SourceError) as ei:
        socket_in("qvp-notns", socket.AF_INET, socket.SOCK_DGRAM)
    assert ei.value.kind == "missing"


def test_none_is_a_plain_socket():
    s = socket_in(None, socket.AF_INET, socket.SOCK_DGRAM)
    assert s.type == socket.SOCK_DGRAM
    s.close()


@pytest.mark.root
def test_cost_setns_versus_create_socket(ns, capsys):
    """The measurement behind the choice of setns over pyroute2's fork per socket."""
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        socket_in(ns, socket.AF_INET, socket.SOCK_DGRAM).close()
    ours = (time.perf_counter() - t0) / n
    m = 10
    t0 = time.perf_counter()
    for _ in range(m):
        pr_netns.create_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, flags=0).close()
    forked = (time.perf_counter() - t0) / m
    with capsys.disabled():
        print(
            f"\nsocket_in (setns): {ours * 1e3:.3f} ms;"
            f" pyroute2 create_socket: {forked * 1e3:.2f} ms"
        )
    assert ours < forked


def test_first_nameserver_parsing():
    text = "# comment\nsearch lan\n; other\nnameserver   10.128.0.1  # AirVPN\nnameserver 1.1.1.1\n"
    assert _first_nameserver(text) == "10.128.0.1"
    assert _first_nameserver("options edns0\n#nameserver 1.2.3.4\n") is None
    assert _first_nameserver("nameserver\n") is None
    assert _first_nameserver("nameserver fe80::1%eth0\n") == "fe80::1%eth0"


def test_resolv_conf_namespace_file_wins_and_host_file_is_the_fallback(tmp_path):
    (tmp_path / "netns" / "vpn").mkdir(parents=True)
    (tmp_path / "netns" / "vpn" / "resolv.conf").write_text("nameserver 10.128.0.1\n")
    (tmp_path / "resolv.conf").write_text("nameserver 192.168.1.1\n")
    assert resolv_conf_nameserver("vpn", etc=str(tmp_path)) == "10.128.0.1"
    assert resolv_conf_nameserver(None, etc=str(tmp_path)) == "192.168.1.1"
    # No namespace file: processes in the namespace see the host's resolv.conf.
    assert resolv_conf_nameserver("other", etc=str(tmp_path)) == "192.168.1.1"
    (tmp_path / "resolv.conf").unlink()
    assert resolv_conf_nameserver("other", etc=str(tmp_path)) is None
