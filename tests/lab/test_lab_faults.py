"""Each fault: its raw symptom, what the watchdog's checks say, and recovery after heal.

Raw level first (counters, routes, sockets: what the fault does to the real
parts), then the checks: the right ones fail with the right reason and the
others stay ok. Checks whose module does not exist yet are left out of the
comparison (see ``LabHandle.run_checks``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pytest

from qbt_vpn_watchdog.lab import faults, guard_faults
from qbt_vpn_watchdog.lab import topology as t
from tests.support.procs import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.root, pytest.mark.qbittorrent]

DNS_NAME = "check.airvpn.lab"
WHATISMYIP = f"http://{t.WHATISMYIP_IP}/api/whatismyip/"


def push_udp(lab, n: int = 30, size: int = 200) -> None:
    """Send n datagrams into the tunnel from the confined namespace (tx must climb)."""
    code = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for _ in range({n}): s.sendto(b'x' * {size}, ('{t.WHATISMYIP_IP}', 9))\n"
    )
    import sys

    lab.exec_in(t.NS_VPN, [sys.executable, "-c", code])


def dns_ok(lab) -> bool:
    return lab.dns_query(DNS_NAME, t.SERVER_TUN_IP, timeout=1.0) == t.WHATISMYIP_IP


def whatismyip(lab) -> dict | None:
    rc, body = lab.http_get(t.NS_VPN, WHATISMYIP, timeout=2)
    return json.loads(body) if rc == 0 and body else None


def route_dev(lab, addr: str) -> str:
    out = lab.exec_in(t.NS_VPN, ["ip", "route", "get", addr]).stdout.split()
    return out[out.index("dev") + 1] if "dev" in out else ""


def webui_listening(lab) -> bool:
    return bool(lab.exec_in(t.NS_VPN, ["ss", "-Hltn", f"sport = :{t.WEBUI_PORT}"]).stdout.strip())


# --- raw symptoms, one function per fault: assert it, return seconds until seen -----


def raw_return_path(lab) -> float:
    t0 = time.monotonic()
    wait_for(
        "one handshake response and nothing else",
        lambda: (p := lab.peer()) is not None and p["handshake"] > 0 and p["rx"] == 92,
        step=0.1,
    )
    took = time.monotonic() - t0
    tx0 = lab.peer()["tx"]
    push_udp(lab)
    assert lab.dns_query(DNS_NAME, t.SERVER_TUN_IP, timeout=1.0) == "timeout"
    time.sleep(0.5)
    p = lab.peer()
    assert p["rx"] == 92, "the 92-byte signature: peer rx is exactly one handshake response"
    assert p["tx"] > tx0 + 30 * 200, "tx keeps climbing while nothing comes back"
    return took


def raw_blackhole(lab) -> float:
    rx0 = lab.peer()["rx"]
    assert lab.dns_query(DNS_NAME, t.SERVER_TUN_IP, timeout=1.0) == "timeout"
    push_udp(lab)
    assert lab.peer()["rx"] == rx0, "rx freezes wherever it was"
    return 1.0  # the query's timeout: the first moment the symptom can be seen


def raw_dns(lab) -> float:
    t0 = time.monotonic()
    assert lab.dns_query(DNS_NAME, t.SERVER_TUN_IP, timeout=1.0) == "timeout"
    took = time.monotonic() - t0
    assert whatismyip(lab)["ip"] == t.EXIT_IP, "the tunnel still carries data"
    return took


def raw_dns_leak(lab) -> float:
    resolv = open(f"/etc/netns/{t.NS_VPN}/resolv.conf").read()
    assert f"nameserver {t.LEAK_RESOLVER}" in resolv
    assert route_dev(lab, t.LEAK_RESOLVER) == t.LAN_NS, "the resolver is routed out of the veth"
    return 0.0


def raw_exit_ip(lab) -> float:
    ans = whatismyip(lab)
    assert ans["airvpn"] is False and ans["ip"] != t.EXIT_IP
    return 0.0


def raw_bind(lab) -> float:
    assert lab.qbt().app_preferences()["current_network_interface"] == t.LAN_NS
    return 0.0


def raw_tunnel_down(lab) -> float:
    t0 = time.monotonic()
    wait_for(
        "the tunnel interface gone", lambda: not t.link_exists(t.WG_CLIENT, t.NS_VPN), step=0.1
    )
    took = time.monotonic() - t0
    assert lab.peer() is None  # the UAPI socket is stale: wg cannot read it
    assert route_dev(lab, t.SERVER_TUN_IP) == "", "no route at all: nothing leaves"
    return took


def raw_webui_exposed(lab) -> float:
    assert lab.tcp_connect(t.NS_INET, t.EXIT_IP, t.WEBUI_PORT) == "connected"
    assert lab.tcp_connect(t.NS_VPN, t.EXIT_IP, t.WEBUI_PORT) == "connected"
    return 0.0


def ipv6_routes(lab) -> str:
    return lab.exec_in(t.NS_VPN, ["ip", "-6", "route", "show", "table", "all"]).stdout.strip()


def raw_ipv6_routes(lab) -> None:
    routes = ipv6_routes(lab)
    assert f"default via {t.LAN6_ROUTER} dev {t.LAN_NS}" in routes, routes
    addrs = lab.exec_in(t.NS_VPN, ["ip", "-6", "addr", "show", "dev", t.LAN_NS]).stdout
    assert t.LAN6_NS_ADDR in addrs


def raw_ipv6(lab) -> float:
    raw_ipv6_routes(lab)
    # The kill switch still drops it: the check must see the path, not a leak.
    assert lab.tcp_connect(t.NS_VPN, t.LAN6_ROUTER, 80, timeout=1.0) != "connected"
    return 0.0


def killswitch_table(lab) -> str:
    return lab.exec_in(t.NS_VPN, ["nft", "list", "ruleset"]).stdout


def raw_killswitch(lab) -> float:
    assert t.KILLSWITCH_TABLE not in killswitch_table(lab)
    # Nothing leaks at this moment: the routes still point at the tunnel.
    assert route_dev(lab, t.WHATISMYIP_IP) == t.WG_CLIENT
    return 0.0


def raw_killswitch_open(lab) -> float:
    rules = killswitch_table(lab)
    assert f'oifname "{t.LAN_NS}" accept' in rules, rules
    return 0.0


def raw_ipv6_open(lab) -> float:
    raw_ipv6_routes(lab)
    assert "meta nfproto ipv6 accept" in killswitch_table(lab)
    return 0.0


def forwarded_port_answers(lab, port: int = t.FORWARDED_PORT) -> str:
    return lab.tcp_connect(t.NS_INET, t.EXIT_IP, port, timeout=2.0)


def raw_port_closed(lab) -> float:
    assert forwarded_port_answers(lab) != "connected"
    return 0.0


def raw_port_moved(lab) -> float:
    assert lab.qbt().app_preferences()["listen_port"] == guard_faults.MOVED_PORT
    assert forwarded_port_answers(lab) != "connected"
    return 0.0


def raw_qbt_down(lab) -> float:
    t0 = time.monotonic()
    wait_for("the WebUI gone", lambda: not webui_listening(lab), step=0.1)
    return time.monotonic() - t0


BULK = 5_000_000  # bytes: the 5 MB transfer of the report that found the MTU black hole


def download(lab, timeout: float = 5.0) -> int:
    """Bytes of a 5 MB HTTP download through the tunnel received within ``timeout``."""
    p = lab.exec_in(
        t.NS_VPN,
        ["curl", "-s", "--noproxy", "*", "-m", str(timeout), "-o", "/dev/null",
         "-w", "%{size_download}", f"http://{t.WHATISMYIP_IP}/bytes/{BULK}"],
        timeout + 10,
    )  # fmt: skip
    return int(p.stdout.strip() or 0)


def upload(lab, timeout: float = 5.0) -> int:
    """Bytes of a 5 MB HTTP upload through the tunnel the far end confirms within ``timeout``."""
    p = lab.exec_in(
        t.NS_VPN,
        ["bash", "-c", f"head -c {BULK} /dev/zero | curl -s --noproxy '*' -m {timeout} "
         f"-H 'Content-Type: application/octet-stream' --data-binary @- "
         f"http://{t.WHATISMYIP_IP}/sink"],
        timeout + 10,
    )  # fmt: skip
    return json.loads(p.stdout)["received"] if p.returncode == 0 and p.stdout else 0


def small_packets_pass(lab) -> None:
    assert dns_ok(lab), "DNS through the tunnel still answers"
    ans = whatismyip(lab)
    assert ans and ans["ip"] == t.EXIT_IP, "a small HTTP request still works"
    assert lab.peer()["rx"] > 92


def raw_mtu_one_way(lost, kept):
    """The raw symptom of an MTU black hole one way: the transfer ``lost`` (download or
    upload) stalls, every full-size segment that way is lost; ``kept`` still carries full size."""

    def raw(lab) -> float:
        small_packets_pass(lab)
        t0 = time.monotonic()
        assert lost(lab) == 0, f"{lost.__name__}: stalls, every full-size segment that way is lost"
        took = time.monotonic() - t0
        assert kept(lab) == BULK, f"{kept.__name__}: the other way still carries full size"
        return took

    return raw


def raw_mtu(lab) -> float:
    small_packets_pass(lab)
    t0 = time.monotonic()
    assert download(lab) == 0 and upload(lab) == 0, "large packets are lost both ways"
    return time.monotonic() - t0


def healthy_raw(lab, forwarded_port: bool = True) -> None:
    """What every heal must give back (``forwarded_port=False``: all but qBittorrent's
    listener, for a tunnel re-created under a qBittorrent 4.5 still on the old link)."""
    assert ipv6_routes(lab) == "", "IPv6 is blocked in the namespace: not one route"
    wait_for(
        "a tunnel with a handshake",
        lambda: (p := lab.peer()) is not None and p["handshake"],
        step=0.1,
    )
    wait_for("DNS through the tunnel", lambda: dns_ok(lab), timeout=15, step=0.2)
    ans = whatismyip(lab)
    assert ans and ans["ip"] == t.EXIT_IP and ans["airvpn"] is True
    assert route_dev(lab, t.SERVER_TUN_IP) == t.WG_CLIENT
    assert lab.tcp_connect(t.NS_VPN, t.EXIT_IP, t.WEBUI_PORT) == "refused"
    assert f"table inet {t.KILLSWITCH_TABLE}" in killswitch_table(lab)
    wait_for("the WebUI", lambda: webui_listening(lab), step=0.1)
    if forwarded_port:
        wait_for(
            "the forwarded port from outside", lambda: forwarded_port_answers(lab) == "connected"
        )
    assert lab.qbt().app_preferences()["current_network_interface"] == t.WG_CLIENT
    assert lab.peer()["rx"] > 92
    assert download(lab) == BULK and upload(lab) == BULK, "full-size packets cross both ways"


# --- what the checks must say ------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    raw: object
    fail: dict[str, set[str]]  # check -> acceptable reasons
    may_fail: set[str] = field(default_factory=set)  # consequences that are fine either way


EXPECT = {
    # Nothing comes back, small or large: path_mtu says it cannot measure
    # (no_echo), never that large packets are the problem.
    "return-path": Expect(
        raw_return_path,
        {
            "return_path": {"handshake_only"},
            "dns": {"no_answer"},
            "exit_ip": {"unreachable"},
            "path_mtu": {"no_echo"},
            # One-shot: exit_ip fails first, so no exit address is known (the daemon
            # would use the last one exit_ip saw, and say closed).
            "port_forward": {"closed", "no_exit_ip"},
        },
    ),
    "blackhole": Expect(
        raw_blackhole,
        {
            "return_path": {"handshake_only", "no_return_traffic"},
            "dns": {"no_answer"},
            "exit_ip": {"unreachable"},
            "path_mtu": {"no_echo"},
            # One-shot: exit_ip fails first, so no exit address is known (the daemon
            # would use the last one exit_ip saw, and say closed).
            "port_forward": {"closed", "no_exit_ip"},
        },
    ),
    # An MTU black hole: small packets pass, so no other check notices.
    "mtu": Expect(raw_mtu, {"path_mtu": {"large_packets_lost"}}),
    "mtu-down": Expect(raw_mtu_one_way(download, upload), {"path_mtu": {"large_packets_lost"}}),
    "mtu-up": Expect(raw_mtu_one_way(upload, download), {"path_mtu": {"large_packets_lost"}}),
    "dns": Expect(raw_dns, {"dns": {"no_answer"}}),
    # path_mtu probes the resolver only through the tunnel: not here.
    "dns-leak": Expect(raw_dns_leak, {"dns": {"leak"}, "path_mtu": {"not_measured"}}),
    # port_forward connects to the exit address exit_ip saw: here one that does not exist.
    "exit-ip": Expect(raw_exit_ip, {"exit_ip": {"not_airvpn"}}, may_fail={"port_forward"}),
    "bind": Expect(raw_bind, {"bind": {"wrong_interface"}}, may_fail={"port_forward"}),
    "tunnel-down": Expect(
        raw_tunnel_down,
        {
            "handshake": {"missing", "unreadable"},
            "return_path": {"no_tunnel"},
            "dns": {"no_route", "no_answer"},
            "exit_ip": {"unreachable"},
            "path_mtu": {"not_measured", "no_echo"},
            "port_forward": {"closed", "no_exit_ip"},
        },
        may_fail={"bind"},  # qBittorrent's interface has no address now
    ),
    "webui-exposed": Expect(raw_webui_exposed, {"webui": {"exposed"}}),
    # IPv6 on the LAN side while the kill switch drops it: reported, not unsafe (#21).
    "ipv6": Expect(raw_ipv6, {"ipv6": {"route_contained"}}),
    "ipv6-open": Expect(raw_ipv6_open, {"ipv6": {"route_outside"}, "killswitch": {"ipv6_open"}}),
    "qbt-down": Expect(
        raw_qbt_down,
        {"bind": {"unreachable"}, "webui": {"unreachable"}, "port_forward": {"closed"}},
    ),
    "killswitch": Expect(raw_killswitch, {"killswitch": {"missing"}}),
    "killswitch-open": Expect(raw_killswitch_open, {"killswitch": {"lan_open"}}),
    "port-closed": Expect(raw_port_closed, {"port_forward": {"closed"}}),
    "port-moved": Expect(
        raw_port_moved, {"port_forward": {"closed"}, "bind": {"wrong_port", "not_listening"}}
    ),
}

MEASURED: dict[str, float] = {}


def test_every_fault_has_an_expectation():
    assert set(EXPECT) == set(faults.FAULTS)


def test_unknown_fault_names_the_known_ones(lab):
    with pytest.raises(faults.UnknownFault, match="return-path"):
        lab.break_("no-such-fault")


@pytest.mark.parametrize("fault", list(EXPECT))
def test_fault(healed_lab, fault):
    lab, exp = healed_lab, EXPECT[fault]
    t0 = time.monotonic()
    lab.break_(fault)
    applied = time.monotonic() - t0
    assert fault in lab.applied()
    seen = exp.raw(lab)
    MEASURED[fault] = applied + seen
    print(f"{fault}: applied in {applied:.2f} s, raw symptom after {seen:.2f} s more")

    results = lab.run_checks()
    got = {n: (r.ok, r.reason, r.detail) for n, r in results.items()}
    for name, reasons in exp.fail.items():
        if name not in results:
            continue  # that check does not exist yet
        ok, reason, detail = got[name]
        assert not ok and reason in reasons, f"{name}: {reason} ({detail}); want one of {reasons}"
    for name, (ok, reason, detail) in got.items():
        if name not in exp.fail and name not in exp.may_fail:
            assert ok, f"{name} should stay ok under {fault}: {reason} ({detail})"

    assert lab.heal(fault) == [fault]
    assert fault not in lab.applied()
    healthy_raw(lab)
    after = lab.run_checks()
    bad = {n: (r.reason, r.detail) for n, r in after.items() if not r.ok}
    assert bad == {}, f"after healing {fault}"


def test_heal_without_argument_heals_everything(healed_lab):
    lab = healed_lab
    for f in ("dns", "exit-ip", "webui-exposed"):
        lab.break_(f)
    assert sorted(lab.heal()) == ["dns", "exit-ip", "webui-exposed"]
    assert lab.applied() == []
    healthy_raw(lab)


def test_a_recreated_tunnel_leaves_qbittorrent_on_the_old_interface(healed_lab):
    # What the tunnel unit's reload (and remediation's tier 2) does: only the
    # WireGuard link is re-created. qBittorrent 4.5 keeps its socket bound to
    # the old link's index (measured: every time), its preferences still look
    # right, and it can reach no peer. The bind check must see it; the rebind
    # the watchdog does must fix it. qBittorrent 5.1 follows the new link by
    # itself (measured: 10 of 10 restarts): there the check must stay ok.
    from qbt_vpn_watchdog.lab import control, qbt_versions, services

    lab = healed_lab
    control.restart_tunnel()
    try:
        healthy_raw(lab, forwarded_port=False)  # the tunnel itself is fine
        r = lab.run_checks(only=["bind"])["bind"]
        if qbt_versions.selected() != "4.5":
            assert r.ok, r.detail
            assert f"port {t.FORWARDED_PORT}" in r.detail
            return
        assert (r.ok, r.reason) == (False, "stale_listener"), r.detail
        assert f"port {t.FORWARDED_PORT}" in r.detail and "index" in r.detail
        services.rebind_client_qbt()
        r = lab.run_checks(only=["bind"])["bind"]
        assert r.ok, r.detail
        # Rebound, the forwarded port answers from outside again.
        wait_for("the forwarded port from outside", lambda: forwarded_port_answers(lab) == "connected")
    finally:
        # Never leave qBittorrent on a dead link for the tests after this one.
        if qbt_versions.selected() == "4.5" and forwarded_port_answers(lab) != "connected":
            services.rebind_client_qbt()
