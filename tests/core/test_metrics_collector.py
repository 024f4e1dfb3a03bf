"""The snapshot collector: every catalogue family, labels up front, lint-clean, never raises."""

from __future__ import annotations

import dataclasses
import gzip
import re
import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from qbt_vpn_watchdog.metrics import (
    CATALOGUE,
    QBT_CONNECTION_STATUSES,
    QBT_TORRENT_STATES,
    Snapshot,
    SnapshotCollector,
    exposed_names,
)
from qbt_vpn_watchdog.results import OK, REMEDIATION_STATES, CheckResult, RemediationView
from qbt_vpn_watchdog.sources import LinkState, QbtState, TorrentBrief, WgDevice, WgPeer

T0 = 1_760_000_000.0
PUB = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="

REASONS = {
    "handshake": (OK, "stale", "never", "error", "timeout"),
    "return_path": (OK, "no_return_traffic", "error", "timeout"),
    "dns": (OK, "no_answer", "servfail", "leak", "slow", "error", "timeout"),
    "path_mtu": (OK, "large_packets_lost", "no_echo", "not_measured", "error", "timeout"),
    "exit_ip": (OK, "not_airvpn", "leak", "bad_response", "error", "timeout"),
    "bind": (OK, "unbound", "no_address", "error", "timeout"),
    "webui": (OK, "unreachable", "exposed", "error", "timeout"),
    "killswitch": (OK, "missing", "lan_open", "ipv6_open", "unreadable", "error", "timeout"),
    "port_forward": (OK, "closed", "not_configured", "no_exit_ip", "error", "timeout"),
}


def result(name, ok=True, reason=OK, detail="", obs=None, facts=None, started=T0, duration=0.01):
    return CheckResult(name, ok, reason, detail, obs or {}, facts or {}, started, duration)


def full_snapshot(**changes) -> Snapshot:
    results = {n: result(n) for n in REASONS}
    results["return_path"] = result(
        "return_path", False, "no_return_traffic", "tx +3 MB, rx +92 B (one handshake response)"
    )
    results["dns"] = result(
        "dns",
        obs={"latency_seconds:airvpn.org": 0.031, "latency_seconds:example.com": 0.042},
        facts={"resolver": "10.128.0.1", "resolver_interface": "wg0"},
    )
    results["path_mtu"] = result(
        "path_mtu", obs={"path_mtu_bytes": 1320.0, "tunnel_mtu_bytes": 1320.0},
        facts={"target": "10.128.0.1"},
    )  # fmt: skip
    results["exit_ip"] = result(
        "exit_ip", obs={"airvpn": 1.0}, facts={"ip": "198.51.100.7", "country": "NL"}
    )
    results["killswitch"] = result(
        "killswitch", facts={"veth1 ipv4": "refused", "veth1 ipv6": "no_path"}
    )
    results["port_forward"] = result("port_forward", obs={"connect_seconds": 0.042})
    readings = {
        "wireguard": WgDevice(
            "wg0",
            "uapi",
            51820,
            (WgPeer(PUB, "192.0.2.1:1637", T0 - 30, 92, 3_000_000, ("0.0.0.0/0",), 15),),
        ),
        "tunnel_link": LinkState("wg0", 5, True, 1320, ("10.150.0.2/32",), 0, 2_500_000, 0, 900),
        "qbittorrent": QbtState(
            "v4.5.2",
            "2.8.19",
            "wg0",
            "10.150.0.2",
            51413,
            "*",
            8080,
            "firewalled",
            12,
            1000,
            2000,
            10_000,
            20_000,
            ("10.150.0.2",),
            (
                TorrentBrief("a" * 40, "ubuntu.iso", "stalledDL", ()),
                TorrentBrief("b" * 40, "debian.iso", "stalledDL", ("watchdog-stopped",)),
            ),
        ),  # fmt: skip
    }
    view = RemediationView(
        "holding",
        held_stopped=2,
        actions_total={"stop_torrents": 1, "restart_tunnel": 0},
        failures_total={"stop_torrents": 0, "restart_tunnel": 0},
        summary="holding 2 torrents",
    )
    snap = Snapshot(
        results=results,
        readings=readings,
        remediation=view,
        last_cycle=T0 + 1,
        cycles=42,
        reload_failures=1,
        checks=tuple(REASONS),
        reasons=REASONS,
        interface="wg0",
    )
    return dataclasses.replace(snap, **changes)


def render(snap) -> str:
    reg = CollectorRegistry()
    reg.register(SnapshotCollector(lambda: snap))
    return generate_latest(reg).decode()


def families_with_samples(text: str) -> set[str]:
    """Exposition family names (as in # TYPE) that have at least one sample."""
    out = set()
    for fam in text_string_to_metric_families(text):
        if fam.samples:
            # The parser strips _total from counters; the catalogue keeps it.
            out.add(fam.name + "_total" if fam.type == "counter" else fam.name)
    return out


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text, metric, **labels):
    return samples(text)[(metric, frozenset(labels.items()))]


def test_full_snapshot_exposes_exactly_the_catalogue():
    text = render(full_snapshot())
    typed = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    assert typed == exposed_names()
    assert families_with_samples(text) == exposed_names()


def test_catalogue_types_match_exposition():
    text = render(full_snapshot())
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for m in CATALOGUE:
        # Info metrics are gauges named *_info in the Prometheus text format.
        assert types[m.name] == ("gauge" if m.type == "info" else m.type), m.name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_metrics_is_clean():
    for snap in (full_snapshot(), None):
        text = render(snap)
        p = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert p.returncode == 0, p.stdout + p.stderr
        assert p.stdout.strip() == "" and p.stderr.strip() == "", p.stdout + p.stderr


def test_label_values_exist_before_the_first_failure():
    text = render(full_snapshot())
    s = samples(text)
    for check, reasons in REASONS.items():
        for why in reasons:
            key = ("qbtvpn_check_reason", frozenset({"check": check, "reason": why}.items()))
            assert key in s, key
    for st in QBT_CONNECTION_STATUSES:
        assert ("qbtvpn_qbittorrent_connection_status", frozenset({"status": st}.items())) in s
    for st in REMEDIATION_STATES:
        assert ("qbtvpn_remediation_state", frozenset({"state": st}.items())) in s
    for st in QBT_TORRENT_STATES:
        assert ("qbtvpn_qbittorrent_torrents", frozenset({"state": st}.items())) in s


def test_values_come_from_the_snapshot():
    text = render(full_snapshot())
    assert value(text, "qbtvpn_healthy") == 0
    assert value(text, "qbtvpn_cycles_total") == 42
    assert value(text, "qbtvpn_config_reload_failures_total") == 1
    assert value(text, "qbtvpn_last_cycle_timestamp_seconds") == T0 + 1
    assert value(text, "qbtvpn_check_success", check="return_path") == 0
    assert value(text, "qbtvpn_check_success", check="dns") == 1
    assert value(text, "qbtvpn_check_reason", check="return_path", reason="no_return_traffic") == 1
    assert value(text, "qbtvpn_check_reason", check="return_path", reason="ok") == 0
    assert value(text, "qbtvpn_check_last_run_timestamp_seconds", check="bind") == T0
    peer = {"interface": "wg0", "public_key": PUB}
    assert value(text, "qbtvpn_wireguard_peer_receive_bytes_total", **peer) == 92
    assert value(text, "qbtvpn_wireguard_peer_transmit_bytes_total", **peer) == 3_000_000
    assert value(text, "qbtvpn_wireguard_peer_last_handshake_timestamp_seconds", **peer) == T0 - 30
    assert value(text, "qbtvpn_wireguard_peer_info", endpoint="192.0.2.1:1637", **peer) == 1
    assert value(text, "qbtvpn_interface_up", interface="wg0") == 1
    assert value(text, "qbtvpn_interface_transmit_bytes_total", interface="wg0") == 2_500_000
    assert value(text, "qbtvpn_dns_lookup_duration_seconds", name="airvpn.org") == 0.031
    assert value(text, "qbtvpn_dns_lookup_duration_seconds", name="example.com") == 0.042
    assert value(text, "qbtvpn_dns_resolver_info", resolver="10.128.0.1", interface="wg0") == 1
    assert value(text, "qbtvpn_exit_ip_info", ip="198.51.100.7", country="NL") == 1
    assert value(text, "qbtvpn_exit_ip_airvpn") == 1
    assert value(text, "qbtvpn_qbittorrent_up") == 1
    assert value(text, "qbtvpn_qbittorrent_connection_status", status="firewalled") == 1
    assert value(text, "qbtvpn_qbittorrent_connection_status", status="connected") == 0
    assert value(text, "qbtvpn_qbittorrent_torrents", state="stalledDL") == 2
    assert value(text, "qbtvpn_qbittorrent_bind_info", interface="wg0", address="10.150.0.2") == 1
    assert value(text, "qbtvpn_remediation_state", state="holding") == 1
    assert value(text, "qbtvpn_remediations_total", action="stop_torrents") == 1
    assert value(text, "qbtvpn_torrents_held_stopped") == 2


def test_healthy_when_every_check_passed():
    snap = full_snapshot()
    results = dict(snap.results, return_path=result("return_path"))
    assert value(render(dataclasses.replace(snap, results=results)), "qbtvpn_healthy") == 1
    # A check with no result yet is not healthy.
    del results["bind"]
    assert value(render(dataclasses.replace(snap, results=results)), "qbtvpn_healthy") == 0


HTTP = {"qbtvpn_http_connections", "qbtvpn_http_connections_dropped_total",
        "qbtvpn_http_auth_failures_total"}  # fmt: skip


def test_before_the_first_cycle_only_build_info_and_the_http_server():
    text = render(None)
    assert families_with_samples(text) == {"qbtvpn_build_info", *HTTP}


def test_failed_reads_say_down_not_unknown():
    snap = full_snapshot(
        readings={"tunnel_link": None},
        reading_errors={"qbittorrent": "connection refused", "wireguard": "no such device"},
    )
    text = render(snap)
    assert value(text, "qbtvpn_qbittorrent_up") == 0
    assert value(text, "qbtvpn_interface_up", interface="wg0") == 0
    names = families_with_samples(text)
    assert "qbtvpn_wireguard_peer_receive_bytes_total" not in names
    assert "qbtvpn_qbittorrent_connection_status" not in names
    # A source never read (its checks disabled) has no qbittorrent_up at all.
    assert "qbtvpn_qbittorrent_up" not in families_with_samples(render(full_snapshot(readings={})))


def test_unexpected_values_get_their_own_label():
    snap = full_snapshot()
    q = dataclasses.replace(snap.readings["qbittorrent"], connection_status="weird")
    snap = dataclasses.replace(snap, readings=dict(snap.readings, qbittorrent=q))
    assert value(render(snap), "qbtvpn_qbittorrent_connection_status", status="weird") == 1


def test_a_broken_section_is_left_out_and_the_rest_renders(caplog):
    snap = full_snapshot()
    snap = dataclasses.replace(snap, readings=dict(snap.readings, wireguard=object()))
    coll = SnapshotCollector(lambda: snap)
    for _ in range(3):
        fams = {f.name for f in coll.collect()}
    assert "qbtvpn_wireguard_peer" not in fams and "qbtvpn_check_success" in fams
    assert caplog.text.count("cannot render wireguard") == 1  # logged once, not per scrape


def test_a_failing_snapshot_getter_never_fails_the_scrape():
    def boom():
        raise RuntimeError("bug")

    fams = {f.name for f in SnapshotCollector(boom).collect()}
    assert fams == {"qbtvpn_build", *(n.removesuffix("_total") for n in HTTP)}


def test_secrets_never_reach_the_exposition():
    # The collector exports only public facts: a peer's public key, never any other key material.
    text = render(full_snapshot())
    assert "private" not in text.lower() and "password" not in text.lower()



def test_prerender_survives_a_scrape_that_adds_a_variant_meanwhile():
    # The loop renders, at the end of each cycle, every variant scraped since the
    # last one, while HTTP threads keep rendering: a scrape asking for a new
    # variant of the same snapshot must not grow what prerender is walking
    # ("dictionary changed size during iteration" ended the cycle before WATCHDOG=1).
    from qbt_vpn_watchdog.metrics import Exposition

    snap = full_snapshot()
    exp = Exposition(lambda: snap)
    exp.render("", False)
    exp.render("application/openmetrics-text; version=1.0.0", False)
    cached_snap, variants = exp._cached

    class ScrapedMeanwhile(dict):
        """The variants as prerender walks them, with a scrape landing between two steps."""

        def items(self):
            first = True
            for item in dict.items(self):
                yield item
                if first:
                    first = False
                    exp.render("", True)  # another thread: the same snapshot, gzipped

    exp._cached = (cached_snap, ScrapedMeanwhile(variants))
    exp.prerender()  # must not raise
    body, _ = exp.render("", True)
    assert gzip.decompress(body) == exp.render("", False)[0]
