"""The metric catalogue and the collector that renders the last snapshot.

Every series the watchdog exports is declared once in ``CATALOGUE``; the
collector, the dashboard tests and the alert tests all read it, so a panel or
an alert that names a metric not listed here fails a test.

The collector only formats the last immutable ``Snapshot`` the loop swapped
in: no netlink, DNS or HTTP call ever runs on the scrape path.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from watchdog import __version__
from watchdog.results import REMEDIATION_STATES, CheckResult, RemediationView

log = logging.getLogger(__name__)

PREFIX = "qbtvpn_"


@dataclass(frozen=True)
class Metric:
    name: str  # full name, including PREFIX (and _total for counters)
    type: str  # "gauge" | "counter" | "info"
    help: str
    labels: tuple[str, ...] = ()


def _m(name: str, type_: str, help_: str, *labels: str) -> Metric:
    return Metric(PREFIX + name, type_, help_, tuple(labels))


CATALOGUE: tuple[Metric, ...] = (
    # --- the watchdog itself
    _m("build_info", "info", "Version of the watchdog and of Python.", "version", "python"),
    _m("last_cycle_timestamp_seconds", "gauge", "When the last poll cycle finished (unix time)."),
    _m("cycles_total", "counter", "Poll cycles completed since start."),
    _m("config_reload_failures_total", "counter", "SIGHUP reloads rejected because the new config was invalid."),
    _m("healthy", "gauge", "1 when every enabled check passed in the last cycle, else 0."),
    # --- every check
    _m("check_success", "gauge", "1 when the check passed on its last run, else 0.", "check"),
    _m("check_reason", "gauge", "1 for the reason of the check's last result, 0 for its other reasons.", "check", "reason"),
    _m("check_duration_seconds", "gauge", "How long the check's last run took.", "check"),
    _m("check_last_run_timestamp_seconds", "gauge", "When the check last ran (unix time).", "check"),
    # --- WireGuard (peer counters count what crossed the wire, handshakes included)
    _m("wireguard_peer_info", "info", "The tunnel's peer; the endpoint changes, so it is a label here only.", "interface", "public_key", "endpoint"),
    _m("wireguard_peer_last_handshake_timestamp_seconds", "gauge", "When the last handshake with the peer completed (unix time); 0 = never.", "interface", "public_key"),
    _m("wireguard_peer_receive_bytes_total", "counter", "Bytes received from the peer on the wire, handshake responses (92 bytes each) included.", "interface", "public_key"),
    _m("wireguard_peer_transmit_bytes_total", "counter", "Bytes sent to the peer on the wire, handshake initiations included.", "interface", "public_key"),
    # --- the tunnel interface (decrypted traffic on a TUN; wire bytes on the kernel's WireGuard)
    _m("interface_up", "gauge", "1 when the tunnel interface exists and is up in the namespace.", "interface"),
    _m("interface_receive_bytes_total", "counter", "Bytes received on the tunnel interface: decrypted traffic under wireguard-go or boringtun; on the kernel's WireGuard the wire bytes of every message, handshakes included.", "interface"),
    _m("interface_transmit_bytes_total", "counter", "Bytes sent on the tunnel interface: before encryption under wireguard-go or boringtun; on the kernel's WireGuard the wire bytes of every message, handshakes included.", "interface"),
    # --- DNS through the VPN's resolver
    _m("dns_lookup_duration_seconds", "gauge", "Latency of the last DNS lookup through the VPN's resolver.", "name"),
    _m("dns_resolver_info", "info", "The resolver the namespace uses and the interface the route to it leaves by.", "resolver", "interface"),
    # --- exit IP
    _m("exit_ip_info", "info", "The exit address the exit-IP endpoint saw.", "ip", "country"),
    _m("exit_ip_airvpn", "gauge", "1 when the exit-IP endpoint says the request came through AirVPN, else 0."),
    # --- qBittorrent
    _m("qbittorrent_up", "gauge", "1 when the qBittorrent Web API answered the last cycle, else 0."),
    _m("qbittorrent_info", "info", "qBittorrent and Web API versions.", "version", "api_version"),
    _m("qbittorrent_connection_status", "gauge", "1 for qBittorrent's current connection status, 0 for the others.", "status"),
    _m("qbittorrent_bind_info", "info", "The interface and address qBittorrent is bound to.", "interface", "address"),
    _m("qbittorrent_listen_port", "gauge", "The port qBittorrent listens on for peers."),
    _m("qbittorrent_dht_nodes", "gauge", "DHT nodes qBittorrent is connected to."),
    _m("qbittorrent_download_speed_bytes_per_second", "gauge", "qBittorrent's current download rate."),
    _m("qbittorrent_upload_speed_bytes_per_second", "gauge", "qBittorrent's current upload rate."),
    _m("qbittorrent_download_bytes_total", "counter", "Bytes downloaded in this qBittorrent session."),
    _m("qbittorrent_upload_bytes_total", "counter", "Bytes uploaded in this qBittorrent session."),
    _m("qbittorrent_torrents", "gauge", "Torrents by state.", "state"),
    # --- remediation
    _m("remediation_state", "gauge", "1 for the remediation state the watchdog is in, 0 for the others.", "state"),
    _m("remediations_total", "counter", "Remediation actions taken.", "action"),
    _m("remediation_failures_total", "counter", "Remediation actions that failed.", "action"),
    _m("torrents_held_stopped", "gauge", "Torrents the watchdog stopped and holds stopped (tagged watchdog-stopped)."),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in CATALOGUE}


def exposed_names() -> set[str]:
    """Every series name as it appears in the exposition (info -> _info, counters -> _total)."""
    return {m.name for m in CATALOGUE}


# --- the snapshot and the collector -------------------------------------------
#
# Everything below is rendered from one immutable Snapshot the loop swaps in
# with a single attribute assignment after each cycle, so a scrape never waits
# for a probe and two overlapping scrapes see consistent values.

# qBittorrent's connection_status values (transfer/info), created up front.
QBT_CONNECTION_STATUSES = ("connected", "firewalled", "disconnected")
# qBittorrent's torrent states (Web API torrents/info, 4.x and 5.x names), created
# up front so an alert on e.g. stalledDL has a series before the first one.
QBT_TORRENT_STATES = (
    "error", "missingFiles", "uploading", "pausedUP", "stoppedUP", "queuedUP", "stalledUP",
    "checkingUP", "forcedUP", "allocating", "downloading", "metaDL", "forcedMetaDL", "pausedDL",
    "stoppedDL", "queuedDL", "stalledDL", "checkingDL", "forcedDL", "checkingResumeData",
    "moving", "unknown",
)  # fmt: skip

# How the dns check names its per-name latency observations.
DNS_LATENCY_PREFIX = "latency_seconds:"


@dataclass(frozen=True)
class Snapshot:
    """What the loop knew after its last cycle; the only input of the collector."""

    # The latest result of every enabled check, including checks that did not
    # run this cycle (their own interval is longer than the poll interval).
    results: Mapping[str, CheckResult]
    # The last successful reading per source, from Context.readings():
    # "wireguard" -> WgDevice, "tunnel_link" -> LinkState | None, "qbittorrent" -> QbtState.
    readings: Mapping[str, Any]
    remediation: RemediationView
    last_cycle: float  # unix time the last cycle finished
    cycles: int
    reload_failures: int
    checks: tuple[str, ...]  # the enabled checks, in display order
    reasons: Mapping[str, tuple[str, ...]]  # check -> every reason it can report (ok first)
    interface: str = ""  # the tunnel interface from the config
    # Sources whose last read failed (key -> operator message): "down", not "unknown".
    reading_errors: Mapping[str, str] = field(default_factory=dict)
    version: str = __version__

    @property
    def healthy(self) -> bool:
        return all(c in self.results and self.results[c].ok for c in self.checks)


def _family(short: str, labels: tuple[str, ...] | None = None):
    m = BY_NAME[PREFIX + short]
    if labels is None:
        labels = m.labels
    if m.type == "gauge":
        return GaugeMetricFamily(m.name, m.help, labels=labels)
    if m.type == "counter":
        return CounterMetricFamily(m.name, m.help, labels=labels)
    # Info families are named without "_info"; the exposition adds it back.
    return InfoMetricFamily(m.name.removesuffix("_info"), m.help)


def _b(v: bool) -> float:
    return 1.0 if v else 0.0


class SnapshotCollector:
    """A prometheus_client custom collector that renders the last Snapshot.

    ``collect()`` does no I/O, keeps nothing between scrapes (but a note of
    which sections it already logged a bug for) and never raises: a section
    that fails is left out and logged once.
    """

    def __init__(self, get_snapshot: Callable[[], Snapshot | None]) -> None:
        self._get = get_snapshot
        self._logged: set[str] = set()

    def describe(self):
        # The families this collector owns, for the registry's duplicate check.
        for m in CATALOGUE:
            yield _family(m.name.removeprefix(PREFIX))

    def collect(self):
        try:
            snap = self._get()
        except Exception:  # noqa: BLE001 - a scrape must never fail
            snap = None
            self._log_once("snapshot")
        sections = [("watchdog", self._watchdog)]
        if snap is not None:
            sections += [
                ("checks", self._checks),
                ("wireguard", self._wireguard),
                ("interface", self._interface),
                ("dns", self._dns),
                ("exit_ip", self._exit_ip),
                ("qbittorrent", self._qbittorrent),
                ("remediation", self._remediation),
            ]
        for name, fn in sections:
            try:
                families = list(fn(snap))
            except Exception:  # noqa: BLE001 - leave the section out, keep the rest
                self._log_once(name)
                continue
            yield from families

    def _log_once(self, section: str) -> None:
        if section not in self._logged:
            self._logged.add(section)
            log.exception("metrics: cannot render %s (a bug; left out of /metrics)", section)

    # --- sections -------------------------------------------------------------

    def _watchdog(self, s: Snapshot | None):
        f = _family("build_info")
        f.add_metric([], {"version": __version__, "python": platform.python_version()})
        yield f
        if s is None:
            return
        f = _family("last_cycle_timestamp_seconds")
        f.add_metric([], s.last_cycle)
        yield f
        f = _family("cycles_total")
        f.add_metric([], s.cycles)
        yield f
        f = _family("config_reload_failures_total")
        f.add_metric([], s.reload_failures)
        yield f
        f = _family("healthy")
        f.add_metric([], _b(s.healthy))
        yield f

    def _checks(self, s: Snapshot):
        success = _family("check_success")
        reason = _family("check_reason")
        duration = _family("check_duration_seconds")
        last_run = _family("check_last_run_timestamp_seconds")
        for name in s.checks:
            r = s.results.get(name)
            reasons = tuple(s.reasons.get(name, ()))
            if r is not None and r.reason not in reasons:
                reasons += (r.reason,)
            for why in reasons:
                reason.add_metric([name, why], _b(r is not None and r.reason == why))
            if r is None:
                continue
            success.add_metric([name], _b(r.ok))
            duration.add_metric([name], r.duration)
            last_run.add_metric([name], r.started)
        yield from (success, reason, duration, last_run)

    def _wireguard(self, s: Snapshot):
        dev = s.readings.get("wireguard")
        info = _family("wireguard_peer_info")
        hs = _family("wireguard_peer_last_handshake_timestamp_seconds")
        rx = _family("wireguard_peer_receive_bytes_total")
        tx = _family("wireguard_peer_transmit_bytes_total")
        if dev is not None:
            for p in dev.peers:
                key = [dev.interface, p.public_key]
                labels = {"interface": dev.interface, "public_key": p.public_key}
                info.add_metric([], {**labels, "endpoint": p.endpoint or ""})
                hs.add_metric(key, p.last_handshake or 0.0)
                rx.add_metric(key, p.rx_bytes)
                tx.add_metric(key, p.tx_bytes)
        yield from (info, hs, rx, tx)

    def _interface(self, s: Snapshot):
        up = _family("interface_up")
        rx = _family("interface_receive_bytes_total")
        tx = _family("interface_transmit_bytes_total")
        ifname = s.interface
        if "tunnel_link" in s.readings:
            link = s.readings["tunnel_link"]
            up.add_metric([ifname], _b(link is not None and link.up))
            if link is not None:
                rx.add_metric([ifname], link.rx_bytes)
                tx.add_metric([ifname], link.tx_bytes)
        elif "tunnel_link" in s.reading_errors:
            up.add_metric([ifname], 0.0)
        yield from (up, rx, tx)

    def _dns(self, s: Snapshot):
        latency = _family("dns_lookup_duration_seconds")
        info = _family("dns_resolver_info")
        r = s.results.get("dns")
        if r is not None:
            for key, value in sorted(r.observations.items()):
                if key.startswith(DNS_LATENCY_PREFIX):
                    latency.add_metric([key[len(DNS_LATENCY_PREFIX) :]], value)
            resolver = r.facts.get("resolver", "")
            if resolver:
                info.add_metric(
                    [], {"resolver": resolver, "interface": r.facts.get("resolver_interface", "")}
                )
        yield from (latency, info)

    def _exit_ip(self, s: Snapshot):
        info = _family("exit_ip_info")
        airvpn = _family("exit_ip_airvpn")
        r = s.results.get("exit_ip")
        if r is not None:
            ip = r.facts.get("ip", "")
            if ip:
                info.add_metric([], {"ip": ip, "country": r.facts.get("country", "")})
            if "airvpn" in r.observations:
                airvpn.add_metric([], r.observations["airvpn"])
        yield from (info, airvpn)

    def _qbittorrent(self, s: Snapshot):
        q = s.readings.get("qbittorrent")
        up = _family("qbittorrent_up")
        if q is not None:
            up.add_metric([], 1.0)
        elif "qbittorrent" in s.reading_errors:
            up.add_metric([], 0.0)
        yield up
        if q is None:
            return
        f = _family("qbittorrent_info")
        f.add_metric([], {"version": q.version, "api_version": q.api_version})
        yield f
        f = _family("qbittorrent_connection_status")
        statuses = QBT_CONNECTION_STATUSES
        if q.connection_status not in statuses:
            statuses += (q.connection_status,)
        for st in statuses:
            f.add_metric([st], _b(st == q.connection_status))
        yield f
        f = _family("qbittorrent_bind_info")
        f.add_metric([], {"interface": q.interface_name, "address": q.interface_address})
        yield f
        for short, value in (
            ("qbittorrent_listen_port", q.listen_port),
            ("qbittorrent_dht_nodes", q.dht_nodes),
            ("qbittorrent_download_speed_bytes_per_second", q.dl_speed),
            ("qbittorrent_upload_speed_bytes_per_second", q.up_speed),
            ("qbittorrent_download_bytes_total", q.dl_total),
            ("qbittorrent_upload_bytes_total", q.up_total),
        ):
            f = _family(short)
            f.add_metric([], value)
            yield f
        counts = dict.fromkeys(QBT_TORRENT_STATES, 0)
        for t in q.torrents:
            counts[t.state] = counts.get(t.state, 0) + 1
        f = _family("qbittorrent_torrents")
        for st, n in counts.items():
            f.add_metric([st], n)
        yield f

    def _remediation(self, s: Snapshot):
        v = s.remediation
        f = _family("remediation_state")
        states = REMEDIATION_STATES
        if v.state not in states:
            states += (v.state,)
        for st in states:
            f.add_metric([st], _b(st == v.state))
        yield f
        f = _family("remediations_total")
        for action, n in sorted(v.actions_total.items()):
            f.add_metric([action], n)
        yield f
        f = _family("remediation_failures_total")
        for action, n in sorted(v.failures_total.items()):
            f.add_metric([action], n)
        yield f
        f = _family("torrents_held_stopped")
        f.add_metric([], v.held_stopped)
        yield f
