"""The `dns` check against a real dnsmasq across a veth between two of our namespaces.

qvp-cdns plays the confined namespace: its only way out is the veth
``qvpwg0`` (named like the tunnel), on whose far side (qvp-cdsrv) dnsmasq and
a misbehaving server listen. The route lookup is a small fake: that part of
the decision is pure.
"""

from __future__ import annotations

import time

import dns.message
import dns.rcode
import dns.rrset
import pytest

import qbt_vpn_watchdog.checks.dns  # noqa: F401 - registers the check
from qbt_vpn_watchdog.checks import REGISTRY, Context, Runner
from qbt_vpn_watchdog.config import parse
from qbt_vpn_watchdog.results import Outcome
from qbt_vpn_watchdog.sources import SourceError, Sources
from qbt_vpn_watchdog.sources.dns import Resolver
from tests.support.netns_helpers import dnsmasq, netns, udp_server, veth
from tests.support.session_names import unique

pytestmark = pytest.mark.root

CLIENT, SERVER = unique("qvp-cdns"), unique("qvp-cdsrv")
TUNNEL = "qvpwg0"
GOOD, ODD, NOBODY = "10.77.0.1", "10.77.0.3", "10.77.0.4"


def _odd(data: bytes) -> bytes | None:
    q = dns.message.from_wire(data)
    name = q.question[0].name.to_text().rstrip(".")
    r = dns.message.make_response(q)
    if name == "servfail.test":
        r.set_rcode(dns.rcode.SERVFAIL)
    elif name == "junk.test":
        return b"\xff" * 7
    elif name == "silent.test":
        return None
    elif name == "slow.test":
        time.sleep(0.3)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "10.9.9.8"))
    elif name == "late.test":
        # Behind a saturated tunnel: answered, but well after slow_after.
        time.sleep(0.6)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "10.9.9.8"))
    return r.to_wire()


@pytest.fixture(scope="module")
def net():
    with netns(CLIENT), netns(SERVER):
        veth(CLIENT, TUNNEL, "10.77.0.2/29", SERVER, "qvps0", f"{GOOD}/29")
        from tests.support.netns_helpers import sh

        sh("ip", "-n", SERVER, "addr", "add", f"{ODD}/29", "dev", "qvps0")
        with (
            dnsmasq(
                SERVER,
                GOOD,
                53,
                "--address=/airvpn.test/10.9.9.9",
                "--address=/other.test/10.9.9.10",
                "--address=/nx.test/",
                "--host-record=v6only.test,fd00::9",
                "--local=/v6only.test/",
            ),
            udp_server(SERVER, ODD, 53, _odd),
        ):
            yield


class Links:
    """The route lookup, faked: destination -> output interface (None: no route)."""

    def __init__(self, routes: dict[str, str | None] | Exception):
        self.routes = routes

    def route_interface(self, dst: str) -> str | None:
        if isinstance(self.routes, Exception):
            raise self.routes
        return self.routes.get(dst)


class CountingResolver(Resolver):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.asked: list[str] = []

    def query(self, name, server, timeout, rdtype="A", retransmit_after=None):
        self.asked.append(name)
        return super().query(name, server, timeout, rdtype, retransmit_after)


def _run(
    tmp_path,
    names=("airvpn.test",),
    resolver=GOOD,
    routes=None,
    slow_after=1.0,
    timeout=2.0,
    resolv_conf: str | None = None,
) -> tuple[Outcome, CountingResolver]:
    names_toml = ", ".join(f'"{n}"' for n in names)
    cfg = parse(
        f"""
        [namespace]
        name = "{CLIENT}"
        [wireguard]
        interface = "{TUNNEL}"
        [checks.dns]
        names = [{names_toml}]
        resolver = "{resolver}"
        slow_after = {slow_after}
        timeout = {timeout}
        """
    )
    etc = tmp_path / "etc"
    (etc / "netns" / CLIENT).mkdir(parents=True, exist_ok=True)
    if resolv_conf is not None:
        (etc / "netns" / CLIENT / "resolv.conf").write_text(resolv_conf)
    res = CountingResolver(CLIENT, etc=str(etc))
    routes = {GOOD: TUNNEL, ODD: TUNNEL, NOBODY: TUNNEL} if routes is None else routes
    sources = Sources(wireguard=None, links=Links(routes), dns=res, http=None, qbittorrent=None)
    outcome = REGISTRY["dns"].fn(Context(cfg, sources))
    assert isinstance(outcome, Outcome)
    if not outcome.ok:
        assert outcome.reason in REGISTRY["dns"].reason_names
    return outcome, res


def test_passes_with_latency_per_name_and_resolver_facts(net, tmp_path):
    o, res = _run(tmp_path, names=("airvpn.test", "other.test"))
    assert o.ok, o.detail
    assert set(o.observations) == {"latency_seconds:airvpn.test", "latency_seconds:other.test"}
    assert all(0 < v < 1 for v in o.observations.values())
    assert dict(o.facts) == {"resolver": GOOD, "resolver_interface": TUNNEL}
    assert res.asked == ["airvpn.test", "other.test"]


def test_resolver_from_the_namespace_resolv_conf(net, tmp_path):
    o, _ = _run(tmp_path, resolver="", resolv_conf=f"nameserver {GOOD}\n")
    assert o.ok and o.facts["resolver"] == GOOD


def test_no_resolver(net, tmp_path):
    o, _ = _run(tmp_path, resolver="", resolv_conf="search lan\n")
    assert o.reason == "no_resolver"
    assert f"/etc/netns/{CLIENT}/resolv.conf" in o.detail
    o, _ = _run(tmp_path, resolver="", resolv_conf="nameserver dns.lan\n")
    assert o.reason == "no_resolver" and "dns.lan" in o.detail


def test_leak_is_not_queried(net, tmp_path):
    # The route to the resolver leaves through eth0: asking it would send the
    # names in clear outside the tunnel, so the check must not ask at all.
    o, res = _run(tmp_path, routes={GOOD: "eth0"})
    assert o.reason == "leak"
    assert "eth0" in o.detail and TUNNEL in o.detail
    assert o.facts["resolver_interface"] == "eth0"
    assert res.asked == []


def test_loopback_resolver_is_a_leak(net, tmp_path):
    o, res = _run(tmp_path, resolver="127.0.0.53", routes={"127.0.0.53": "lo"})
    assert o.reason == "leak" and "loopback" in o.detail
    assert res.asked == []


def test_no_route(net, tmp_path):
    o, res = _run(tmp_path, routes={})
    assert o.reason == "no_route" and TUNNEL in o.detail
    assert res.asked == []
    o, _ = _run(
        tmp_path, routes=SourceError("network namespace 'x' does not exist", kind="missing")
    )
    assert o.reason == "no_route" and "does not exist" in o.detail


def test_no_answer_within_the_checks_own_budget(net, tmp_path):
    t0 = time.monotonic()
    o, res = _run(tmp_path, resolver=NOBODY, names=("airvpn.test", "other.test"), timeout=0.5)
    assert o.reason == "no_answer"
    assert time.monotonic() - t0 < 0.5  # before the runner would call it a timeout
    assert res.asked == ["airvpn.test"]  # a silent resolver is not asked again


def test_no_answer_for_one_name(net, tmp_path):
    o, _ = _run(tmp_path, resolver=ODD, names=("silent.test",), timeout=0.5)
    assert o.reason == "no_answer" and "silent.test" in o.detail


@pytest.mark.parametrize(
    ("resolver", "name", "reason"),
    [
        (ODD, "servfail.test", "servfail"),
        (ODD, "junk.test", "bad_response"),
        (GOOD, "host.nx.test", "nxdomain"),
        (GOOD, "v6only.test", "empty"),
        (GOOD, "unknown.test", "refused"),  # dnsmasq without upstreams refuses
    ],
)
def test_failure_reasons(net, tmp_path, resolver, name, reason):
    o, _ = _run(tmp_path, resolver=resolver, names=(name,))
    assert o.reason == reason, o.detail
    assert name in o.detail


def test_slow(net, tmp_path):
    o, _ = _run(tmp_path, resolver=ODD, names=("slow.test",), slow_after=0.1)
    assert o.reason == "slow" and "slow.test" in o.detail
    assert o.observations["latency_seconds:slow.test"] > 0.25


def test_a_late_answer_is_slow_never_no_answer(net, tmp_path):
    # Answered 0.6 s after the query: past slow_after (0.2 s), so the query was
    # sent again, and the answer still came within the budget (0.8 x 2.0 s).
    o, _ = _run(tmp_path, resolver=ODD, names=("late.test",), slow_after=0.2, timeout=2.0)
    assert o.reason == "slow", o.detail
    assert "asked twice" in o.detail
    assert o.observations["latency_seconds:late.test"] > 0.55


def test_worst_reason_wins_and_every_problem_is_listed(net, tmp_path):
    o, _ = _run(tmp_path, names=("v6only.test", "host.nx.test", "airvpn.test"))
    assert o.reason == "nxdomain"
    assert "v6only.test" in o.detail and "host.nx.test" in o.detail
    assert "latency_seconds:airvpn.test" in o.observations


def test_through_the_runner_no_answer_beats_the_runner_timeout(net, tmp_path):
    cfg = parse(
        f"""
        [namespace]
        name = "{CLIENT}"
        [wireguard]
        interface = "{TUNNEL}"
        [checks.dns]
        names = ["airvpn.test"]
        resolver = "{NOBODY}"
        timeout = 0.5
        """
    )
    sources = Sources(
        wireguard=None,
        links=Links({NOBODY: TUNNEL}),
        dns=Resolver(CLIENT),
        http=None,
        qbittorrent=None,
    )
    results = Runner({"dns": REGISTRY["dns"]}).run_cycle(Context(cfg, sources), {"dns": 0.5}, {})
    assert results["dns"].reason == "no_answer"


def test_with_the_real_route_lookup(net):
    # The same decision with the real rtnetlink lookup in the namespace.
    from qbt_vpn_watchdog.sources.links import Links as RealLinks

    cfg = parse(
        f"""
        [namespace]
        name = "{CLIENT}"
        [wireguard]
        interface = "{TUNNEL}"
        [checks.dns]
        names = ["airvpn.test"]
        resolver = "{GOOD}"
        """
    )
    sources = Sources(
        wireguard=None, links=RealLinks(CLIENT), dns=Resolver(CLIENT), http=None, qbittorrent=None
    )
    o = REGISTRY["dns"].fn(Context(cfg, sources))
    assert o.ok, o.detail
    assert o.facts["resolver_interface"] == TUNNEL
    # Another tunnel name: the same resolver is now reached outside "the tunnel".
    cfg2 = parse(
        f'[namespace]\nname = "{CLIENT}"\n[wireguard]\ninterface = "wg9"\n'
        f'[checks.dns]\nresolver = "{GOOD}"\n'
    )
    o = REGISTRY["dns"].fn(Context(cfg2, sources))
    assert o.reason == "leak" and TUNNEL in o.detail


def test_a_real_answer_becomes_the_check_s_own_series(net, tmp_path):
    from qbt_vpn_watchdog.results import CheckResult

    o, _ = _run(tmp_path, names=("airvpn.test", "other.test"))
    latency, info = REGISTRY["dns"].render(CheckResult.from_outcome("dns", o, 0.0, 0.1))
    assert {s.labels["name"] for s in latency.samples} == {"airvpn.test", "other.test"}
    assert [s.labels for s in info.samples] == [{"resolver": GOOD, "interface": TUNNEL}]
