"""sd_notify against real AF_UNIX datagram sockets (filesystem path and abstract)."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest

from qbt_vpn_watchdog.systemd import Notifier


@pytest.fixture
def path_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(1.0)
    yield s, path
    s.close()


@pytest.fixture
def abstract_socket():
    name = f"qvd-test-{uuid.uuid4().hex[:12]}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(1.0)
    yield s, "@" + name
    s.close()


def received(sock) -> list[dict[str, str]]:
    """Every datagram waiting on sock, parsed into KEY -> value."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(4096)
            out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(1.0)
    return out


def test_path_socket_ready_status_watchdog_stopping(path_socket):
    sock, path = path_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    assert n.enabled and n.watchdog_interval == 30.0
    assert n.ready("ok: 6/6 checks passed")
    assert n.status("FAILING dns (timeout) for 1 cycle")
    assert n.watchdog("ok: 6/6 checks passed")
    assert n.stopping()
    msgs = received(sock)
    assert msgs == [
        {"READY": "1", "STATUS": "ok: 6/6 checks passed"},
        {"STATUS": "FAILING dns (timeout) for 1 cycle"},
        {"WATCHDOG": "1", "STATUS": "ok: 6/6 checks passed"},
        {"STOPPING": "1"},
    ]


def test_abstract_socket(abstract_socket):
    sock, name = abstract_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "5000000"})
    assert n.ready()
    assert n.watchdog()
    assert received(sock) == [{"READY": "1"}, {"WATCHDOG": "1"}]


def test_reloading_carries_monotonic_usec(path_socket):
    sock, path = path_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading("reloading configuration")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    (msg,) = received(sock)
    assert msg["RELOADING"] == "1" and msg["STATUS"] == "reloading configuration"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after


def test_watchdog_pid_of_another_process_sends_no_watchdog(path_socket):
    sock, path = path_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    n = Notifier.from_env(env)
    assert n.watchdog_interval is None
    assert not n.watchdog()
    assert received(sock) == []
    # Other notifications still go to the service manager.
    n.ready()
    assert received(sock) == [{"READY": "1"}]


def test_watchdog_pid_equal_to_ours_applies(path_socket):
    sock, path = path_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier.from_env(env)
    assert n.watchdog_interval == 2.0
    n.watchdog()
    assert received(sock) == [{"WATCHDOG": "1"}]


def test_without_watchdog_usec_no_watchdog_message(path_socket):
    sock, path = path_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.watchdog_interval is None
    assert not n.watchdog()
    n.watchdog("still reporting status")  # STATUS alone still goes out
    assert received(sock) == [{"STATUS": "still reporting status"}]


def test_no_socket_is_a_silent_noop():
    n = Notifier.from_env({})
    assert not n.enabled and n.watchdog_interval is None
    assert not n.ready() and not n.watchdog() and not n.stopping() and not n.reloading()
    # A relative path is not an sd_notify address (sd_notify(3)): ignored, not sent.
    assert not Notifier.from_env({"NOTIFY_SOCKET": "relative.sock"}).ready()


def test_status_is_one_line(path_socket):
    sock, path = path_socket
    Notifier.from_env({"NOTIFY_SOCKET": path}).status("two\nlines\tand  spaces")
    assert received(sock) == [{"STATUS": "two lines and spaces"}]


def test_send_failure_never_raises_and_logs_once(tmp_path, caplog):
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock"), "WATCHDOG_USEC": "1"})
    for _ in range(5):
        assert n.watchdog() is False
    assert caplog.text.count("cannot send sd_notify") == 1


def test_recovers_when_the_socket_comes_back(tmp_path):
    path = str(tmp_path / "late.sock")
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert not n.ready()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.bind(path)
        assert n.ready()
        assert received(s) == [{"READY": "1"}]
    finally:
        s.close()
