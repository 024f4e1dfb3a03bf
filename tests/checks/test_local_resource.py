"""Local resource errors (out of file descriptors, memory, threads) are never unsafe.

A flood of connections to the metrics port once took every file descriptor
of the daemon: the UAPI reader could not open its socket, handshake failed
with ``error: [Errno 24]`` (it fails closed: unsafe) and the log said it
would stop every torrent. The runner now makes the failure of any check that
met a local resource error ``local_resource``, which counts as unknown.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qbt_vpn_watchdog.checks import REGISTRY, load_all
from qbt_vpn_watchdog.checks.runner import Runner
from qbt_vpn_watchdog.results import LOCAL_RESOURCE, UNKNOWN, UNSAFE
from qbt_vpn_watchdog.sources import (
    LOCAL_RESOURCE_ERRNOS,
    LocalResourceError,
    SourceError,
    local_resource,
    os_error,
)
from tests.support.fakes import FakeWireguard, context

load_all()
ROOT = Path(__file__).resolve().parents[2]


def _raised_from(inner: BaseException) -> SourceError:
    """A SourceError raised ``from None`` inside ``except``, as the adapters do."""
    try:
        try:
            raise inner
        except OSError:
            raise SourceError(
                "UAPI socket /run/wireguard/wg0.sock: gone", kind="unreachable"
            ) from None
    except SourceError as e:
        return e


@pytest.mark.parametrize("code", sorted(c for c in LOCAL_RESOURCE_ERRNOS if c != errno.EAGAIN))
def test_each_errno_is_found_behind_the_adapters_own_error(code):
    assert local_resource(_raised_from(OSError(code, "x"))) == LOCAL_RESOURCE_ERRNOS[code]


def test_what_is_not_a_local_limit():
    assert local_resource(_raised_from(ConnectionRefusedError(errno.ECONNREFUSED, "x"))) is None
    # EAGAIN from a non-blocking socket is "no data yet", not a limit.
    assert local_resource(_raised_from(BlockingIOError(errno.EAGAIN, "x"))) is None
    assert local_resource(SourceError("no such interface", kind="missing")) is None


def test_threads_and_memory_count():
    assert "TasksMax" in local_resource(RuntimeError("can't start new thread"))
    assert "memory" in local_resource(MemoryError())


def test_os_error_says_what_ran_out():
    e = os_error(OSError(errno.EMFILE, "Too many open files"), "UAPI socket /run/x.sock")
    assert isinstance(e, LocalResourceError) and e.kind == "local_resource"
    assert str(e) == (
        "UAPI socket /run/x.sock: local resource limit: " + LOCAL_RESOURCE_ERRNOS[errno.EMFILE]
    )
    other = os_error(OSError(errno.ECONNRESET, "Connection reset by peer"), "UAPI socket")
    assert type(other) is SourceError and "Connection reset" in str(other)


def test_local_resource_is_unknown_for_every_check_even_those_that_fail_closed():
    for name, spec in REGISTRY.items():
        assert spec.reason(LOCAL_RESOURCE).severity == UNKNOWN, name
        assert LOCAL_RESOURCE in spec.all_reasons
    assert REGISTRY["handshake"].reason("error").severity == UNSAFE  # fails closed otherwise


@pytest.mark.parametrize(
    "error",
    [
        _raised_from(OSError(errno.EMFILE, "Too many open files")),  # caught by the check
        OSError(errno.EMFILE, "Too many open files"),  # raised through it
    ],
)
def test_the_runner_turns_the_failure_into_local_resource(error):
    ctx = context(wireguard=FakeWireguard(error=error))
    r = Runner({"handshake": REGISTRY["handshake"]}).run_cycle(ctx, {"handshake": 2.0}, {})
    r = r["handshake"]
    assert r.reason == LOCAL_RESOURCE
    assert "local resource limit: too many open files" in r.detail
    assert "not a tunnel fault" in r.detail


# --- the real thing: a process out of file descriptors ------------------------------------

SCRIPT = textwrap.dedent(
    r"""
    import json, os, random, resource, socket, sys, tempfile, threading, time
    import dns.message, dns.rrset

    from qbt_vpn_watchdog import policy
    from qbt_vpn_watchdog.checks import REGISTRY, load_all
    from qbt_vpn_watchdog.checks.context import Context
    from qbt_vpn_watchdog.checks.runner import Runner
    from qbt_vpn_watchdog.config import parse
    from qbt_vpn_watchdog.sources import Sources
    from qbt_vpn_watchdog.sources.dns import Resolver
    from qbt_vpn_watchdog.sources.wireguard import UapiReader
    from tests.support.fakes import FakeLinks

    load_all()
    d = tempfile.mkdtemp(prefix="qvw-fd-")
    now = time.time()
    ANSWER = (
        "private_key=" + "aa" * 32 + "\nlisten_port=51820\npublic_key=" + "01" * 32
        + "\nendpoint=127.0.0.1:1637\nlast_handshake_time_sec=%d\nlast_handshake_time_nsec=0"
        "\ntx_bytes=5000\nrx_bytes=7000\nallowed_ip=0.0.0.0/0\nerrno=0\n\n" % int(now - 20)
    ).encode()

    uapi = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    uapi.bind(os.path.join(d, "qvwfd0.sock"))
    uapi.listen(8)

    def serve_uapi():
        while True:
            c, _ = uapi.accept()
            c.recv(4096)
            c.sendall(ANSWER)
            c.close()

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))

    def serve_dns():
        while True:
            data, peer = udp.recvfrom(4096)
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "10.9.9.9"))
            udp.sendto(r.to_wire(), peer)

    threading.Thread(target=serve_uapi, daemon=True).start()
    threading.Thread(target=serve_dns, daemon=True).start()

    cfg = parse(
        '[wireguard]\ninterface = "qvwfd0"\nreader = "uapi"\nuapi_dir = "%s"\n'
        '[checks.dns]\nresolver = "127.0.0.1"\nnames = ["example.test"]\n' % d
    )
    links = FakeLinks(routes={"127.0.0.1": "qvwfd0"})
    sources = Sources(
        wireguard=UapiReader("qvwfd0", uapi_dir=d), links=links,
        dns=Resolver(None, port=udp.getsockname()[1]), http=None, qbittorrent=None,
    )
    names = ["handshake", "dns"]
    runner = Runner({n: REGISTRY[n] for n in names})
    settings = policy.Settings.from_config(cfg, {n: REGISTRY[n] for n in names})
    settings = settings.__class__(**{**settings.__dict__, "checks": tuple(names)})

    def cycles(n):
        hist, mem, out = {k: [] for k in names}, policy.Memory(), []
        for _ in range(n):
            res = runner.run_cycle(Context(cfg, sources), {k: 3.0 for k in names}, hist)
            for k, r in res.items():
                hist[k].append(r)
            dec = policy.decide(hist, mem, settings, time.time(), random.Random(1))
            mem = dec.memory
            out.append({
                "results": {k: [r.reason, r.detail] for k, r in res.items()},
                "actions": [a.kind for a in dec.actions], "state": dec.state,
            })
        return out

    healthy = cycles(1)
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    starved = cycles(4)
    for fd in held:
        os.close(fd)
    again = cycles(1)
    print(json.dumps({"healthy": healthy, "starved": starved, "again": again}))
    """
)


def test_out_of_file_descriptors_no_check_turns_unsafe_and_nothing_is_done(tmp_path):
    script = tmp_path / "starve.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, str(script), "256"], capture_output=True, text=True, timeout=120, env=env
    )
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout)
    for r in got["healthy"][0]["results"].values():
        assert r[0] == "ok", got["healthy"]
    for cycle in got["starved"]:
        for name, (reason, detail) in cycle["results"].items():
            assert reason == LOCAL_RESOURCE, (name, reason, detail)
            assert "too many open files" in detail
            assert REGISTRY[name].reason(reason).severity != UNSAFE
        assert cycle["actions"] == [] and cycle["state"] == "ok", cycle
    for r in got["again"][0]["results"].values():
        assert r[0] == "ok", got["again"]


def test_a_check_whose_thread_cannot_start_is_local_resource(monkeypatch):
    import threading

    def no_thread(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    ctx = context(wireguard=FakeWireguard(error=SourceError("unused", kind="missing")))
    r = Runner({"handshake": REGISTRY["handshake"]}).run_cycle(ctx, {"handshake": 2.0}, {})
    assert r["handshake"].reason == LOCAL_RESOURCE and "TasksMax" in r["handshake"].detail
