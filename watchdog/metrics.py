"""The metric catalogue and the collector that renders the last snapshot.

Every series the watchdog exports is declared once in ``CATALOGUE``; the
collector, the dashboard tests and the alert tests all read it, so a panel or
an alert that names a metric not listed here fails a test.

The collector only formats the last immutable ``Snapshot`` the loop swapped
in: no netlink, DNS or HTTP call ever runs on the scrape path.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    # --- the tunnel interface (inner, decrypted traffic)
    _m("interface_up", "gauge", "1 when the tunnel interface exists and is up in the namespace.", "interface"),
    _m("interface_receive_bytes_total", "counter", "Decrypted bytes received on the tunnel interface.", "interface"),
    _m("interface_transmit_bytes_total", "counter", "Bytes sent into the tunnel interface before encryption.", "interface"),
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
