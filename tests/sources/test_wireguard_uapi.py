"""The UAPI reader: against real wireguard-go, and against a junk-talking socket."""

from __future__ import annotations

import base64
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from qbt_vpn_watchdog.sources import SourceError, WgDevice
from qbt_vpn_watchdog.sources.wireguard import UapiReader, parse_uapi_get
from tests.support.wg_pair import WgPair, wg_pair_fixture

wg_pair = wg_pair_fixture("qvw")  # namespaces qvw<session>-a/-b, interfaces qvw<session>a0/b0

PRIV_HEX = "aa" * 32
PSK_HEX = "bb" * 32
PUB_HEX = "0102030405060708091011121314151617181920212223242526272829303132"
PUB_B64 = base64.b64encode(bytes.fromhex(PUB_HEX)).decode()


# --- parsing (pure) ------------------------------------------------------------


def uapi(*lines: str) -> str:
    return "\n".join(lines) + "\n"


GOOD = uapi(
    f"private_key={PRIV_HEX}",
    "listen_port=51820",
    "fwmark=0",
    f"public_key={PUB_HEX}",
    f"preshared_key={PSK_HEX}",
    "protocol_version=1",
    "endpoint=[2001:db8::7]:1637",
    "last_handshake_time_sec=1764067200",
    "last_handshake_time_nsec=500000000",
    "tx_bytes=5000000",
    "rx_bytes=92",
    "persistent_keepalive_interval=15",
    "allowed_ip=0.0.0.0/0",
    "allowed_ip=::/0",
    f"public_key={'cc' * 32}",
    "protocol_version=1",
    "last_handshake_time_sec=0",
    "last_handshake_time_nsec=0",
    "tx_bytes=0",
    "rx_bytes=0",
    "persistent_keepalive_interval=0",
    "errno=0",
)


def test_parse_full_answer():
    dev = parse_uapi_get(GOOD, "wg0")
    assert (dev.interface, dev.reader, dev.listen_port) == ("wg0", "uapi", 51820)
    p1, p2 = dev.peers
    assert p1.public_key == PUB_B64
    assert p1.endpoint == "[2001:db8::7]:1637"
    assert p1.last_handshake == 1764067200.5
    assert (p1.rx_bytes, p1.tx_bytes) == (92, 5000000)
    assert p1.allowed_ips == ("0.0.0.0/0", "::/0")
    assert p1.persistent_keepalive == 15
    assert p2.public_key == base64.b64encode(b"\xcc" * 32).decode()
    assert p2.last_handshake is None  # 0 = never
    assert p2.endpoint is None
    assert p2.persistent_keepalive is None


def test_parse_never_keeps_secrets():
    text = repr(parse_uapi_get(GOOD, "wg0"))
    for secret in (PRIV_HEX, PSK_HEX):
        assert secret not in text
        assert base64.b64encode(bytes.fromhex(secret)).decode() not in text


@pytest.mark.parametrize(
    "answer, words",
    [
        ("", "empty"),
        ("hello world\n", "not key=value"),
        (uapi("listen_port=1"), "without errno"),
        (uapi("listen_port=x", "errno=0"), "listen_port"),
        (uapi("rx_bytes=1", "errno=0"), "before any public_key"),
        (uapi("public_key=zz", "errno=0"), "64 hex"),
        (uapi(f"public_key={PUB_HEX}", "tx_bytes=1", "errno=0"), "rx_bytes"),
        (
            uapi(f"public_key={PUB_HEX}", "endpoint=nohost", "rx_bytes=1", "tx_bytes=1", "errno=0"),
            "ip:port",
        ),
        (uapi(f"public_key={PUB_HEX}", "allowed_ip=1.2.3.4/99", "errno=0"), "allowed_ip"),
        (uapi("errno=0", "listen_port=1"), "after errno"),
    ],
)
def test_parse_rejects_broken_answers(answer, words):
    with pytest.raises(SourceError) as e:
        parse_uapi_get(answer, "wg0")
    assert e.value.kind == "bad_response"
    assert words in str(e.value)


def test_parse_bad_errno_never_quotes_a_private_key():
    # A malformed private_key line is skipped, not quoted in the error.
    with pytest.raises(SourceError) as e:
        parse_uapi_get(uapi(f"private_key={PRIV_HEX}xyz", "errno=x"), "wg0")
    assert PRIV_HEX not in str(e.value)


def test_parse_nonzero_errno():
    with pytest.raises(SourceError) as e:
        parse_uapi_get(uapi("errno=19"), "wg0")
    assert e.value.kind == "unreachable"
    assert "errno=19" in str(e.value)


# --- socket errors ---------------------------------------------------------------


@pytest.fixture
def sockdir():
    # Short path: AF_UNIX paths are limited to 108 bytes.
    d = Path(tempfile.mkdtemp(prefix="qvw-uapi-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_missing_socket(sockdir):
    with pytest.raises(SourceError) as e:
        UapiReader("qvwnone0", uapi_dir=str(sockdir)).read()
    assert e.value.kind == "missing"
    assert "qvwnone0.sock" in str(e.value)


def test_stale_socket(sockdir):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(sockdir / "qvwold0.sock"))  # bound, never listening: like a dead daemon's file
    try:
        with pytest.raises(SourceError) as e:
            UapiReader("qvwold0", uapi_dir=str(sockdir)).read()
        assert e.value.kind == "unreachable"
        assert "stale" in str(e.value)
    finally:
        s.close()


class FakeUapi:
    """A unix socket server answering every connection with fixed bytes."""

    def __init__(self, path: Path, answer: bytes, close: bool = True) -> None:
        self.answer, self.close_after = answer, close
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(4)
        self.conns: list[socket.socket] = []
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)
            self.requests.append(c.recv(4096))
            c.sendall(self.answer)
            if self.close_after:
                c.close()

    def stop(self) -> None:
        self.srv.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize(
    "answer, close, kind",
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", True, "bad_response"),
        (b"\xff\xfe junk\n\n", True, "bad_response"),
        (b"listen_port=1\n", True, "bad_response"),  # closed before the blank line
        (b"listen_port=1\n", False, "timeout"),  # never finishes
        (b"x" * (1 << 20) + b"\n\n", True, "bad_response"),  # over the size cap
        (b"errno=13\n\n", True, "unreachable"),
    ],
)
def test_junk_from_the_socket(sockdir, answer, close, kind):
    fake = FakeUapi(sockdir / "qvwjunk0.sock", answer, close)
    try:
        with pytest.raises(SourceError) as e:
            UapiReader("qvwjunk0", uapi_dir=str(sockdir), timeout=0.3).read()
        assert e.value.kind == kind, str(e.value)
        assert fake.requests[0] == b"get=1\n\n"
    finally:
        fake.stop()


# --- real wireguard-go -------------------------------------------------------


def _read_quiet(reader: UapiReader, pair: WgPair, wg: str) -> tuple[WgDevice, list[list[str]]]:
    """A reading and `wg show dump` taken with no traffic in between (retry on a keepalive)."""
    for _ in range(5):
        before = reader.read()
        dump = pair.dump(wg)
        if reader.read() == before:
            return before, dump
    raise AssertionError("counters never stood still")


@pytest.mark.root
def test_read_matches_wg_show(wg_pair):
    wg_pair.echo(3)
    reader = UapiReader(wg_pair.wg_a)
    dev, dump = _read_quiet(reader, wg_pair, wg_pair.wg_a)
    iface, (row,) = dump[0], dump[1:]
    # dump peer row: public-key psk endpoint allowed-ips handshake rx tx keepalive
    assert dev.reader == "uapi"
    assert dev.listen_port == int(iface[2]) == wg_pair.port_a
    (peer,) = dev.peers
    assert peer.public_key == row[0] == wg_pair.public_b
    assert peer.endpoint == row[2] == f"{wg_pair.under_b}:{wg_pair.port_b}"
    assert ",".join(peer.allowed_ips) == row[3]
    assert peer.last_handshake is not None and int(peer.last_handshake) == int(row[4]) > 0
    assert (peer.rx_bytes, peer.tx_bytes) == (int(row[5]), int(row[6]))
    assert peer.rx_bytes > 92 and peer.tx_bytes > 148  # data, not just a handshake
    assert peer.persistent_keepalive == int(row[7]) == wg_pair.keepalive_a
    text = repr(dev)
    assert wg_pair.private_a not in text
    assert base64.b64decode(wg_pair.private_a).hex() not in text


@pytest.mark.root
def test_server_side_learns_the_endpoint(wg_pair):
    wg_pair.echo(1)
    dev, dump = _read_quiet(UapiReader(wg_pair.wg_b), wg_pair, wg_pair.wg_b)
    (peer,) = dev.peers
    assert peer.public_key == wg_pair.public_a
    assert peer.endpoint == f"{wg_pair.under_a}:{wg_pair.port_a}" == dump[1][2]
    assert peer.persistent_keepalive is None


@pytest.mark.root
def test_counters_grow_with_traffic(wg_pair):
    reader = UapiReader(wg_pair.wg_a)
    wg_pair.echo(1)
    before = reader.read().peers[0]
    wg_pair.echo(5, size=600)
    after = reader.read().peers[0]
    # Each echo is 600 bytes of payload plus headers and WireGuard overhead, each way.
    assert after.tx_bytes - before.tx_bytes >= 5 * 600
    assert after.rx_bytes - before.rx_bytes >= 5 * 600


@pytest.mark.root
def test_set_endpoint(wg_pair):
    wg_pair.echo(1)
    reader = UapiReader(wg_pair.wg_a)
    endpoint = f"{wg_pair.under_b}:{wg_pair.port_b}"
    before = reader.read().peers[0]
    reader.set_endpoint(wg_pair.public_b, endpoint)
    wg_pair.echo(1)
    after = reader.read().peers[0]
    assert after.endpoint == endpoint
    assert after.rx_bytes > before.rx_bytes  # the tunnel still works
    # Measured fact the remediation relies on: re-setting the same endpoint keeps
    # the current session (no new handshake). It re-points a peer whose server
    # address changed; it does not force a handshake.
    assert after.last_handshake == before.last_handshake

    other = base64.b64encode(b"\x07" * 32).decode()
    with pytest.raises(SourceError) as e:
        reader.set_endpoint(other, endpoint)
    assert e.value.kind == "missing"
    assert len(wg_pair.dump(wg_pair.wg_a)) == 2  # no peer was added
    with pytest.raises(ValueError, match="resolve hostnames first"):
        reader.set_endpoint(wg_pair.public_b, "europe.vpn.airdns.org:1637")
