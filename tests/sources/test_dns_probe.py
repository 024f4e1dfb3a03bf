"""Resolver: DNS queries from inside a namespace, against a real dnsmasq and a junk server."""

from __future__ import annotations

import socket
import time

import dns.message
import dns.rcode
import dns.rrset
import pytest

from qbt_vpn_watchdog.sources import SourceError
from qbt_vpn_watchdog.sources.dns import Resolver
from tests.support.netns_helpers import dnsmasq, netns, udp_server
from tests.support.session_names import unique

pytestmark = pytest.mark.root

NS = unique("qvp-dns")
PROOF_PORT = 35353  # nothing listens on it in the root namespace (checked below)


_SEEN: dict[str, int] = {}  # name -> queries seen (dropfirst.test)


def _junk_handler(data: bytes) -> bytes | None:
    q = dns.message.from_wire(data)
    name = q.question[0].name.to_text().rstrip(".")
    r = dns.message.make_response(q)
    _SEEN[name] = _SEEN.get(name, 0) + 1
    if name == "dropfirst.test" and _SEEN[name] % 2 == 1:
        return None  # the first query of each pair lost, as from a full queue
    if name == "dropfirst.test":
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "10.9.9.7"))
    elif name == "servfail.test":
        r.set_rcode(dns.rcode.SERVFAIL)
    elif name == "wrongid.test":
        r.id = (q.id + 1) % 65536
    elif name == "otherq.test":
        other = dns.message.make_query("somewhere.else", "A")
        other.id = q.id
        r = dns.message.make_response(other)
    elif name == "junk.test":
        return b"\x00\x01this is not DNS"
    elif name == "silent.test":
        return None
    elif name == "slow.test":
        time.sleep(0.3)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "10.9.9.8"))
    return r.to_wire()


@pytest.fixture(scope="module")
def ns():
    with netns(NS) as name:
        with (
            dnsmasq(
                name,
                "127.0.0.1",
                53,
                "--address=/example.test/10.9.9.9",
                "--address=/nx.test/",
                "--host-record=v6only.test,fd00::9",
                "--local=/v6only.test/",
            ),
            dnsmasq(name, "127.0.0.1", PROOF_PORT, "--address=/proof.test/10.7.7.7"),
            udp_server(name, "127.0.0.2", 53, _junk_handler),
        ):
            yield name


def test_answer_from_dnsmasq_inside_the_namespace(ns):
    a = Resolver(ns).query("example.test", "127.0.0.1", 2.0)
    assert (a.rcode, a.addresses, a.server, a.name) == (
        "NOERROR",
        ("10.9.9.9",),
        "127.0.0.1",
        "example.test",
    )
    assert 0 < a.latency < 1


def test_the_query_really_runs_inside_the_namespace(ns):
    # The server listens only inside the namespace: from the root namespace the
    # same address and port answer nothing (root loopback only, nothing leaves).
    assert Resolver(ns, port=PROOF_PORT).query("proof.test", "127.0.0.1", 2.0).addresses == (
        "10.7.7.7",
    )
    with pytest.raises(SourceError) as ei:
        Resolver(None, port=PROOF_PORT).query("proof.test", "127.0.0.1", 0.3)
    assert ei.value.kind == "timeout"


def test_nxdomain_empty_and_refused_are_answers(ns):
    r = Resolver(ns)
    nx = r.query("host.nx.test", "127.0.0.1", 2.0)
    assert (nx.rcode, nx.addresses) == ("NXDOMAIN", ())
    empty = r.query("v6only.test", "127.0.0.1", 2.0)
    assert (empty.rcode, empty.addresses) == ("NOERROR", ())
    assert r.query("v6only.test", "127.0.0.1", 2.0, rdtype="AAAA").addresses == ("fd00::9",)
    # dnsmasq without upstream servers refuses names it does not know.
    assert r.query("unknown.test", "127.0.0.1", 2.0).rcode == "REFUSED"


def test_servfail(ns):
    a = Resolver(ns).query("servfail.test", "127.0.0.2", 2.0)
    assert (a.rcode, a.addresses) == ("SERVFAIL", ())


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("wrongid.test", "another question"),
        ("otherq.test", "another question"),
        ("junk.test", "malformed"),
    ],
)
def test_junk_answers_are_bad_response(ns, name, words):
    t0 = time.monotonic()
    with pytest.raises(SourceError) as ei:
        Resolver(ns).query(name, "127.0.0.2", 2.0)
    assert ei.value.kind == "bad_response"
    assert words in str(ei.value) and name in str(ei.value)
    assert time.monotonic() - t0 < 1  # reported at once, not after the timeout


def test_no_answer_is_a_timeout(ns):
    t0 = time.monotonic()
    with pytest.raises(SourceError) as ei:
        Resolver(ns).query("silent.test", "127.0.0.2", 0.3)
    assert ei.value.kind == "timeout"
    assert "silent.test" in str(ei.value) and "127.0.0.2" in str(ei.value)
    assert 0.25 < time.monotonic() - t0 < 1.5


def test_a_lost_query_is_sent_once_more_and_the_answer_counts(ns):
    _SEEN.pop("dropfirst.test", None)
    a = Resolver(ns).query("dropfirst.test", "127.0.0.2", 1.0, retransmit_after=0.2)
    assert a.addresses == ("10.9.9.7",) and a.retransmitted
    assert 0.2 <= a.latency < 0.9  # measured from the first send


def test_without_retransmission_a_lost_query_is_a_timeout(ns):
    _SEEN.pop("dropfirst.test", None)
    with pytest.raises(SourceError) as ei:
        Resolver(ns).query("dropfirst.test", "127.0.0.2", 0.4)
    assert ei.value.kind == "timeout"


def test_a_late_answer_to_the_first_query_counts(ns):
    # slow.test is answered 0.3 s late: the retransmission at 0.1 s does not
    # make the first query's answer unwelcome.
    a = Resolver(ns).query("slow.test", "127.0.0.2", 2.0, retransmit_after=0.1)
    assert a.addresses == ("10.9.9.8",) and a.retransmitted
    assert 0.28 < a.latency < 1.0


def test_silence_is_still_a_timeout_with_retransmission(ns):
    t0 = time.monotonic()
    with pytest.raises(SourceError) as ei:
        Resolver(ns).query("silent.test", "127.0.0.2", 0.4, retransmit_after=0.1)
    assert ei.value.kind == "timeout" and "sent twice" in str(ei.value)
    assert 0.35 < time.monotonic() - t0 < 1.5


def test_latency_is_measured(ns):
    a = Resolver(ns).query("slow.test", "127.0.0.2", 2.0)
    assert a.addresses == ("10.9.9.8",)
    assert 0.28 < a.latency < 1.5


def test_bad_server_and_name(ns):
    with pytest.raises(SourceError) as ei:
        Resolver(ns).query("example.test", "not-an-ip", 1.0)
    assert ei.value.kind == "bad_response"
    with pytest.raises(SourceError):
        Resolver(ns).query("a" * 70 + ".test", "127.0.0.1", 1.0)  # label > 63 bytes


def test_missing_namespace():
    with pytest.raises(SourceError) as ei:
        Resolver("qvp-no-such-ns").query("example.test", "127.0.0.1", 1.0)
    assert ei.value.kind == "missing"


def test_nameserver_from_resolv_conf(tmp_path):
    (tmp_path / "netns" / "qvp-x").mkdir(parents=True)
    (tmp_path / "netns" / "qvp-x" / "resolv.conf").write_text("nameserver 10.128.0.1\n")
    assert Resolver("qvp-x", etc=str(tmp_path)).nameserver() == "10.128.0.1"


def test_round_trip_cost(ns, capsys):
    r = Resolver(ns)
    n = 50
    t0 = time.perf_counter()
    for _ in range(n):
        r.query("example.test", "127.0.0.1", 2.0)
    per = (time.perf_counter() - t0) / n
    with capsys.disabled():
        print(f"\nDNS query in a namespace (socket_in + dnsmasq round trip): {per * 1e3:.2f} ms")
    assert per < 0.5


def test_root_has_nothing_on_the_proof_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", PROOF_PORT))  # free in the root namespace
    finally:
        s.close()
