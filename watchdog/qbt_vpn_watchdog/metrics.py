"""The metric catalogue and the collector that renders the last snapshot.

Every series the watchdog exports is declared once: the watchdog's own and
the sources' below (``OWN``), each check's own in the check's file
(``register(..., series=...)``). ``CATALOGUE`` is both; the collector, the
dashboard tests, the alert tests and the README's table all read it, so a
panel or an alert that names a metric not declared fails a test.

The collector only formats the last immutable ``Snapshot`` the loop swapped
in: no netlink, DNS or HTTP call ever runs on the scrape path.
"""

from __future__ import annotations

import gzip
import logging
import platform
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder

from qbt_vpn_watchdog import __version__
from qbt_vpn_watchdog.build import revision
from qbt_vpn_watchdog.checks import CheckSpec, load_all
from qbt_vpn_watchdog.results import REMEDIATION_STATES, Snapshot
from qbt_vpn_watchdog.series import PREFIX, Metric
from qbt_vpn_watchdog.series import flag as _b
from qbt_vpn_watchdog.series import metric as _m

log = logging.getLogger(__name__)

OWN: tuple[Metric, ...] = (
    # --- the watchdog itself
    _m("build_info", "info", "Version and git revision of the watchdog (revision \"unknown\" when not recorded at build time), and Python's version.", "version", "revision", "python"),
    _m("last_cycle_timestamp_seconds", "gauge", "When the last poll cycle finished (unix time)."),
    _m("cycles_total", "counter", "Poll cycles completed since start."),
    _m("config_reload_failures_total", "counter", "SIGHUP reloads rejected because the new config was invalid."),
    _m("config_last_reload_successful", "gauge", "1 when the last config reload (or the start) succeeded, 0 when the last reload was rejected."),
    _m("config_last_reload_success_timestamp_seconds", "gauge", "When the config was last loaded successfully, at start or by a reload (unix time)."),
    _m("healthy", "gauge", "1 when every enabled check passed in the last cycle, else 0."),
    # --- the HTTP server (as of the end of the last cycle: /metrics is rendered then)
    _m("http_connections", "gauge", "Connections open to the HTTP server (at most web.max_connections)."),
    _m("http_connections_dropped_total", "counter", "Connections closed before an answer: max_connections (at the cap), head_timeout, head_too_large, bad_request, tls (handshake failed).", "reason"),
    _m("http_auth_failures_total", "counter", "Requests refused for their credentials: missing, wrong, or throttled (refused unchecked: the client is backing off after wrong credentials).", "reason"),
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
    _m("remediation_mode", "gauge", "1 for the mode the watchdog runs in (enforce: acts; observe: only reports), 0 for the other.", "mode"),
    _m("remediation_state", "gauge", "1 for the remediation state the watchdog is in, 0 for the others; in observe mode, the state it would be in.", "state"),
    _m("remediations_total", "counter", "Remediation actions attempted, failed ones included.", "action"),
    _m("remediation_failures_total", "counter", "Remediation actions attempted that failed.", "action"),
    _m("torrents_held_stopped", "gauge", "Torrents the watchdog stopped and holds stopped (tagged watchdog-stopped)."),
)

CATALOGUE: tuple[Metric, ...] = (*OWN, *(m for spec in load_all().values() for m in spec.series))

BY_NAME: dict[str, Metric] = {m.name: m for m in CATALOGUE}
if len(BY_NAME) != len(CATALOGUE):
    raise RuntimeError("two series share a name in the catalogue")


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
# config watchdog.mode: "enforce" acts, "observe" only reports what it would do.
REMEDIATION_MODES = ("enforce", "observe")
# qBittorrent's torrent states (Web API torrents/info, 4.x and 5.x names), created
# up front so an alert on e.g. stalledDL has a series before the first one.
QBT_TORRENT_STATES = (
    "error", "missingFiles", "uploading", "pausedUP", "stoppedUP", "queuedUP", "stalledUP",
    "checkingUP", "forcedUP", "allocating", "downloading", "metaDL", "forcedMetaDL", "pausedDL",
    "stoppedDL", "queuedDL", "stalledDL", "checkingDL", "forcedDL", "checkingResumeData",
    "moving", "unknown",
)  # fmt: skip


def _family(short: str):
    return BY_NAME[PREFIX + short].family()


class SnapshotCollector:
    """A prometheus_client custom collector that renders the last Snapshot.

    ``collect()`` does no I/O, keeps nothing between scrapes (but a note of
    which sections it already logged a bug for) and never raises: a section
    that fails is left out and logged once.
    """

    def __init__(
        self,
        get_snapshot: Callable[[], Snapshot | None],
        specs: Mapping[str, CheckSpec] | None = None,
        http_stats: Any = None,
    ) -> None:
        self._get = get_snapshot
        self._http = http_stats  # http_server.HttpStats, or None (no server)
        self._logged: set[str] = set()
        # The checks whose own series are rendered (every registered one by default).
        self._rendered = [s for s in (specs or load_all()).values() if s.render is not None]

    def describe(self):
        # The families this collector owns, for the registry's duplicate check.
        for m in CATALOGUE:
            yield m.family()

    def collect(self):
        try:
            snap = self._get()
        except Exception:  # noqa: BLE001 - a scrape must never fail
            snap = None
            self._log_once("snapshot")
        sections = [("watchdog", self._watchdog), ("http", self._http_server)]
        if snap is not None:
            sections += [
                ("checks", self._checks),
                *((spec.name, self._check_series(spec)) for spec in self._rendered),
                ("wireguard", self._wireguard),
                ("interface", self._interface),
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
        f.add_metric(
            [],
            {"version": __version__, "revision": revision(), "python": platform.python_version()},
        )
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
        f = _family("config_last_reload_successful")
        f.add_metric([], _b(s.reload_ok))
        yield f
        f = _family("config_last_reload_success_timestamp_seconds")
        f.add_metric([], s.reload_success_time)
        yield f
        f = _family("healthy")
        f.add_metric([], _b(s.healthy))
        yield f

    def _http_server(self, _s: Snapshot | None):
        from qbt_vpn_watchdog.http_server import DROP_REASONS, HttpStats
        from qbt_vpn_watchdog.web_security import AUTH_FAILURE_REASONS

        http = self._http if self._http is not None else HttpStats()  # no server: zeros
        f = _family("http_connections")
        f.add_metric([], http.open)
        yield f
        for short, reasons, counts in (
            ("http_connections_dropped_total", DROP_REASONS, http.dropped),
            ("http_auth_failures_total", AUTH_FAILURE_REASONS, http.auth.failures),
        ):
            f = _family(short)
            for reason in reasons:
                f.add_metric([reason], counts.get(reason, 0))
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

    @staticmethod
    def _check_series(spec: CheckSpec):
        def section(s: Snapshot):
            assert spec.render is not None
            return spec.render(s.results.get(spec.name))

        return section

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
        f = _family("remediation_mode")
        for mode in REMEDIATION_MODES:
            f.add_metric([mode], _b(mode == s.mode))
        yield f
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


_MAX_VARIANTS = 8  # formats x gzip kept per snapshot


class Exposition:
    """The exposition of the current snapshot, rendered once per snapshot and format.

    The format is negotiated from the scrape's Accept header by prometheus_client
    (``choose_encoder``: OpenMetrics when asked for, else the text format) and
    gzipped when Accept-Encoding allows. Each variant is rendered at most once per
    snapshot, and the loop renders again, at the end of each cycle, every variant
    asked for since the last one (``prerender``): scrapes between two cycles get
    ready bytes, so their latency does not depend on the number of torrents (or
    anything else in the snapshot). A snapshot replaced outside a cycle (a
    rejected reload) is rendered by the first scrape that sees it.
    """

    def __init__(
        self,
        get_snapshot: Callable[[], Snapshot | None],
        specs: Mapping[str, CheckSpec] | None = None,
        *,
        http_stats: Any = None,
        process_metrics: bool = False,
    ) -> None:
        self._get = get_snapshot
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(SnapshotCollector(get_snapshot, specs, http_stats))
        self._process: ProcessCollector | None = None
        self.process_metrics(process_metrics)
        # (snapshot, {(content type, gzip): (body, an Accept header that chose it)}),
        # swapped whole when the snapshot changes.
        self._cached: tuple[Snapshot | None, dict[tuple[str, bool], tuple[bytes, str]]] = (
            None,
            {},
        )

    def render(self, accept: str = "", gzipped: bool = False) -> tuple[bytes, str]:
        """(body, Content-Type) for a scrape with this Accept header; gzipped when asked."""
        encoder, content_type = choose_encoder(accept)
        snap = self._get()
        cached_snap, variants = self._cached
        if cached_snap is not snap or snap is None:
            variants = {}
        key = (content_type, gzipped)
        got = variants.get(key)
        if got is None:
            body = encoder(self.registry)
            got = (gzip.compress(body, 6) if gzipped else body, accept)
            if len(variants) < _MAX_VARIANTS:  # odd Accept headers cannot grow it
                # A new dict, swapped in whole: never grow one another thread (the
                # loop's prerender, a scrape) may be walking. Two scrapes racing
                # here lose at most one cached variant, rendered again next time.
                self._cached = (snap, {**variants, key: got})
        return got[0], content_type

    def process_metrics(self, on: bool) -> None:
        """Serve prometheus_client's process_* series (watchdog.process_metrics), or stop."""
        if on and self._process is None:
            self._process = ProcessCollector(registry=None)
            self.registry.register(self._process)
        elif not on and self._process is not None:
            self.registry.unregister(self._process)
            self._process = None
        self.forget()

    def prerender(self) -> None:
        """Render for the current snapshot every variant scraped for the last one."""
        asked = [(accept, gz) for (_, gz), (_, accept) in self._cached[1].items()]
        for accept, gzipped in asked or [("", False)]:
            self.render(accept, gzipped)

    def forget(self) -> None:
        """Drop the cached bytes (the benchmark measures the render itself)."""
        self._cached = (None, {})
