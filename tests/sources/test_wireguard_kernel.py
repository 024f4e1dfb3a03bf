"""The kernel (generic netlink) WireGuard path, without the kernel module.

The fixtures are the bytes the kernel sends for WG_CMD_GET_DEVICE (see
fixtures/wireguard/make_kernel_fixtures.py); they are decoded by pyroute2's own
``wgmsg`` so its real parser runs, then handed to ``device_from_messages``.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pyroute2.netlink.generic.wireguard import WGPEER_F_UPDATE_ONLY, AsyncWireGuard, wgmsg

from qbt_vpn_watchdog.config import Config, WireguardSection
from qbt_vpn_watchdog.sources import SourceError
from qbt_vpn_watchdog.sources.wireguard import (
    AutoReader,
    KernelReader,
    UapiReader,
    device_from_messages,
    make_reader,
    peer_endpoint_update,
)
from tests.fixtures.wireguard import make_kernel_fixtures as fx

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "wireguard"


def load(name: str) -> list[wgmsg]:
    msgs = []
    for line in (FIXTURES / name).read_text().split():
        m = wgmsg(bytes.fromhex(line))
        m.decode()
        msgs.append(m)
    return msgs


def test_fixtures_are_up_to_date(tmp_path, monkeypatch):
    # The .hex files are what the generator writes: nobody edited one by hand.
    monkeypatch.setattr(fx, "HERE", tmp_path)
    fx.main()
    for f in tmp_path.glob("*.hex"):
        assert f.read_text() == (FIXTURES / f.name).read_text(), f.name


def test_split_dump_merges_into_one_device():
    dev = device_from_messages(load("kernel_dump_split.hex"), "wg0")
    assert dev.interface == "wg0"
    assert dev.reader == "kernel"
    assert dev.listen_port == 51820
    assert [p.public_key for p in dev.peers] == [fx.PEER1, fx.PEER2, fx.PEER3]
    p1, p2, p3 = dev.peers
    # AirVPN-like server: the 92-byte failure's pattern, one handshake response (92 bytes) back.
    assert p1.endpoint == "198.51.100.7:1637"
    assert p1.last_handshake == pytest.approx(1764067200.123456789)
    assert (p1.rx_bytes, p1.tx_bytes) == (92, 5_000_000)
    assert p1.allowed_ips == ("0.0.0.0/0", "::/0")
    assert p1.persistent_keepalive == 15
    # IPv6 endpoint; allowed IPs continued in the second message.
    assert p2.endpoint == "[2001:db8::7]:1637"
    assert p2.last_handshake == 1764067100.0
    assert (p2.rx_bytes, p2.tx_bytes) == (4096, 2048)
    assert p2.allowed_ips == ("10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "fd00:1::/64")
    assert p2.persistent_keepalive is None  # 0 = off
    # Never handshaked, endpoint unknown.
    assert p3.last_handshake is None
    assert p3.endpoint is None
    assert (p3.rx_bytes, p3.tx_bytes, p3.allowed_ips) == (0, 0, ())


def test_device_without_peers():
    dev = device_from_messages(load("kernel_dump_no_peers.hex"))
    assert dev.interface == "wg0"  # taken from WGDEVICE_A_IFNAME
    assert dev.listen_port == 51820
    assert dev.peers == ()


def test_no_secret_in_the_result():
    dev = device_from_messages(load("kernel_dump_split.hex"), "wg0")
    text = repr(dev) + str(dev)
    for secret in (fx.PRIVATE, fx.PSK):
        raw = base64.b64decode(secret)
        assert secret not in text
        assert raw.hex() not in text
        assert raw.decode() not in text


def test_empty_dump_is_bad_response():
    with pytest.raises(SourceError) as e:
        device_from_messages([], "wg0")
    assert e.value.kind == "bad_response"


def test_peer_without_counters_is_bad_response():
    # A truncated peer entry (key only, no continuation before it) must not
    # become a peer with made-up zero counters.
    m = wgmsg()
    m["cmd"] = 0
    m["version"] = 1
    m["header"]["type"] = fx.GENL_ID
    m["attrs"] = [
        ["WGDEVICE_A_IFNAME", "wg0"],
        ["WGDEVICE_A_PEERS", [{"attrs": [["WGPEER_A_PUBLIC_KEY", fx.PEER1]]}]],
    ]
    m.encode()
    d = wgmsg(m.data)
    d.decode()
    with pytest.raises(SourceError) as e:
        device_from_messages([d], "wg0")
    assert e.value.kind == "bad_response"
    assert "rx_bytes" in str(e.value)


def test_junk_objects_are_bad_response():
    with pytest.raises(SourceError) as e:
        device_from_messages([{"not": "a message"}], "wg0")
    assert e.value.kind == "bad_response"


def test_set_endpoint_message_changes_only_the_endpoint():
    # Run pyroute2's own encoder on our peer update, decode it, look at the bytes.
    msg = wgmsg()
    msg["attrs"].append(["WGDEVICE_A_IFNAME", "wg0"])
    AsyncWireGuard()._wg_set_peer(msg, peer_endpoint_update(fx.PEER1, "2001:db8::5", 1637))
    msg["cmd"] = 1
    msg["version"] = 1
    msg["header"]["type"] = fx.GENL_ID
    msg.encode()
    out = wgmsg(msg.data)
    out.decode()
    (peer,) = out.get_attr("WGDEVICE_A_PEERS")
    assert peer.get_attr("WGPEER_A_PUBLIC_KEY").decode() == fx.PEER1
    ep = peer.get_attr("WGPEER_A_ENDPOINT")
    assert (ep["family"], ep["addr"], ep["port"]) == (socket.AF_INET6, "2001:db8::5", 1637)
    # UPDATE_ONLY: a wrong key never adds a peer; allowed IPs and keys untouched.
    assert peer.get_attr("WGPEER_A_FLAGS") == WGPEER_F_UPDATE_ONLY
    names = {name for name, *_ in peer["attrs"]}
    assert names == {"WGPEER_A_PUBLIC_KEY", "WGPEER_A_ENDPOINT", "WGPEER_A_FLAGS"}


def test_set_endpoint_rejects_hostnames_and_bad_keys():
    r = KernelReader("qvwk0")
    with pytest.raises(ValueError, match="resolve hostnames first"):
        r.set_endpoint(fx.PEER1, "europe.vpn.airdns.org:1637")
    with pytest.raises(ValueError, match="32"):
        r.set_endpoint(base64.b64encode(b"short").decode(), "198.51.100.7:1637")
    r.close()


def _has_wireguard_module() -> bool:
    return os.path.exists("/sys/module/wireguard")


@pytest.mark.skipif(_has_wireguard_module(), reason="this machine has the WireGuard module")
def test_kernel_read_without_module_is_a_clear_source_error():
    r = KernelReader("qvwk0")
    try:
        with pytest.raises(SourceError) as e:
            r.read()
        assert e.value.kind == "missing"
        assert "module" in str(e.value) and "uapi" in str(e.value)
    finally:
        r.close()


@pytest.mark.root
def test_kernel_read_in_missing_namespace_does_not_create_it():
    assert not os.path.exists("/run/netns/qvw-missing")
    r = KernelReader("qvwk0", netns="qvw-missing")
    try:
        with pytest.raises(SourceError) as e:
            r.read()
        assert e.value.kind == "missing"
        assert "qvw-missing" in str(e.value)
    finally:
        r.close()
    assert not os.path.exists("/run/netns/qvw-missing")


def test_make_reader_follows_config(tmp_path):
    def cfg(reader: str) -> Config:
        return Config(
            wireguard=WireguardSection(interface="qvwx0", reader=reader, uapi_dir=str(tmp_path))
        )

    assert isinstance(make_reader(cfg("uapi")), UapiReader)
    assert isinstance(make_reader(cfg("kernel")), KernelReader)
    auto = make_reader(cfg("auto"))
    assert isinstance(auto, AutoReader)
    # auto decides per call: kernel while there is no socket file, UAPI once there is.
    assert auto._pick() is auto.kernel
    (tmp_path / "qvwx0.sock").touch()
    assert auto._pick() is auto.uapi
    auto.close()


@pytest.mark.skipif(_has_wireguard_module(), reason="this machine has the WireGuard module")
def test_failing_kernel_reads_leak_nothing():
    # Every cycle retries from a new runner thread: no descriptor may pile up.
    r = KernelReader("qvwk0")
    kinds: list[str] = []

    def one() -> None:
        try:
            r.read()
        except SourceError as e:
            kinds.append(e.kind)

    one()
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        t = threading.Thread(target=one)
        t.start()
        t.join()
    assert kinds == ["missing"] * 11
    assert len(os.listdir("/proc/self/fd")) == fds
    r.close()


LEAN_IMPORT = """
import sys
from qbt_vpn_watchdog.sources.wireguard import KernelReader
KernelReader("qvwk0").close()
loaded = {m for m in sys.modules if m.startswith("pyroute2")}
print(len(loaded), "pyroute2.ndb.main" in loaded, "pyroute2.conntrack" in loaded)
from pyroute2 import NDB, IPRoute, WireGuard
from pyroute2.netlink.generic.wireguard import WireGuard as Same
print(WireGuard is Same, "pyroute2.ndb.main" in sys.modules)
"""


def test_kernel_reader_imports_only_the_pyroute2_modules_it_uses():
    # A fresh interpreter: in this one pyroute2 is imported in full by other tests.
    out = subprocess.run(
        [sys.executable, "-c", LEAN_IMPORT], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    count, ndb, conntrack = out[0].split()
    assert (ndb, conntrack) == ("False", "False") and int(count) < 30, out
    # Asked for the whole package afterwards, one gets it, and the same classes.
    assert out[1] == "True True", out
