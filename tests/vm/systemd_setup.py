"""In the systemd VM, before the product's units: an AirVPN-like server and a host's config.

Run by ``qvw-airvpn.service`` (test scaffolding, not a product unit) as
``python -m tests.vm.systemd_setup``. It makes what a user's host has before the
plain units in systemd/ start:

    VM root ──vpnwan0══vpnwan1── airvpn (kernel WireGuard wgsrv 10.128.0.1/24,
                                         listen 1637; dnsmasq on 10.128.0.1)

- keys, and AirVPN's generated config at /etc/qbittorrent-vpn/airvpn.conf
  (the private key in airvpn.key), and the vpn-netns.sh arguments (netns.env);
- the qBittorrent profile at /var/lib/qbittorrent-vpn (bound to wg0, the
  WebUI password from /etc/qbt-vpn-watchdog/webui-password);
- the watchdog's config at /etc/qbt-vpn-watchdog/config.toml.

The VM has no network device: every address here exists only inside it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from qbt_vpn_watchdog.lab.services import write_qbt_profile

SERVER_NS = "airvpn"
WAN_HOST, WAN_SRV = "vpnwan0", "vpnwan1"
WAN_HOST_ADDR, WAN_SRV_IP = "198.18.0.2/30", "198.18.0.1"
SERVER_TUN, CLIENT_TUN = "10.128.0.1", "10.128.0.42"
PORT = 1637
LAN_HOST_IP, LAN_NS_IP = "192.168.77.1", "192.168.77.2"
WEBUI_PORT = 8080
DNS_NAME, DNS_ANSWER = "vpn.test", "10.128.0.53"

ETC_VPN = Path("/etc/qbittorrent-vpn")
ETC_WATCHDOG = Path("/etc/qbt-vpn-watchdog")
PROFILE = Path("/var/lib/qbittorrent-vpn")


def run(*argv: str, input: str | None = None) -> str:
    return subprocess.run(argv, input=input, capture_output=True, text=True, check=True).stdout


def secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)


def netns_args() -> str:
    return " ".join(
        [
            "--netns vpn --interface wg0",
            f"--config {ETC_VPN}/airvpn.conf --private-key-file {ETC_VPN}/airvpn.key",
            "--lan-veth vpnlan0:vpnlan1",
            f"--lan-host-addr {LAN_HOST_IP}/30 --lan-ns-addr {LAN_NS_IP}/30",
            f"--lan-ranges {LAN_HOST_IP}/30 --webui-port {WEBUI_PORT}",
        ]
    )


def watchdog_config() -> str:
    return f"""[watchdog]
# 5 s, not the default 10: the same logic, in less of the test's time.
interval = 5.0
mode = "enforce"

[namespace]
name = "vpn"

[wireguard]
interface = "wg0"
reader = "kernel"

[qbittorrent]
url = "http://{LAN_NS_IP}:{WEBUI_PORT}"
username = "admin"
password_file = "{ETC_WATCHDOG}/webui-password"
timeout = 30.0

[checks.handshake]
timeout = 30.0

[checks.return_path]
timeout = 30.0

[checks.dns]
names = ["{DNS_NAME}"]
# Long enough for Python under TCG, short enough that a cycle with the return path
# broken (every query times out) does not last half a minute.
timeout = 8.0
slow_after = 6.0

[checks.exit_ip]
# No exit-IP endpoint in the VM.
enabled = false

[checks.bind]
timeout = 30.0

[checks.webui]
timeout = 30.0

[checks.port_forward]
# No forwarded port in the VM (it would only say not_configured).
enabled = false

[remediation]
restart_unit = "qbittorrent-vpn-tunnel.service"
restart_backoff_initial = 5.0
"""


STATE = Path("/var/lib/qvw-airvpn")  # the server's side of the keys, kept across a reboot


def host_config() -> tuple[str, str, str]:
    """The host's config (first boot only) and the server's keys: (server key, psk, client pub)."""
    if (STATE / "server.key").exists():  # a reboot: the host keeps its config, the server its keys
        return tuple((STATE / n).read_text() for n in ("server.key", "psk", "client.pub"))  # type: ignore[return-value]
    server_key, client_key, psk = run("wg", "genkey"), run("wg", "genkey"), run("wg", "genpsk")
    server_pub = run("wg", "pubkey", input=server_key).strip()
    client_pub = run("wg", "pubkey", input=client_key)
    write_host_config(server_pub, client_key, psk)
    for name, text in (("server.key", server_key), ("psk", psk), ("client.pub", client_pub)):
        secret(STATE / name, text)
    return server_key, psk, client_pub


def write_host_config(server_pub: str, client_key: str, psk: str) -> None:
    secret(ETC_VPN / "airvpn.key", client_key)
    secret(
        ETC_VPN / "airvpn.conf",
        f"[Interface]\nAddress = {CLIENT_TUN}/32\nDNS = {SERVER_TUN}\nMTU = 1320\n\n"
        f"[Peer]\nPublicKey = {server_pub}\nPresharedKey = {psk}\n"
        f"Endpoint = {WAN_SRV_IP}:{PORT}\nAllowedIPs = 0.0.0.0/0\nPersistentKeepalive = 15\n",
    )
    (ETC_VPN / "netns.env").write_text(f"QBT_VPN_NETNS_ARGS={netns_args()}\n")
    password = secrets.token_urlsafe(18)
    secret(ETC_WATCHDOG / "webui-password", password + "\n")
    (ETC_WATCHDOG / "config.toml").write_text(watchdog_config())
    write_qbt_profile(
        PROFILE,
        interface="wg0",
        address="",
        port=47123,
        webui_address="*",
        webui_port=WEBUI_PORT,
        password=password,
        save_path=PROFILE / "downloads",
    )


def main() -> None:
    # The install step a user runs once: the user qbittorrent-nox runs as.
    run("systemd-sysusers", "/etc/sysusers.d/qbittorrent-vpn.conf")
    server_key, psk, client_pub = host_config()
    client_pub = client_pub.strip()
    # The server side (network namespaces do not survive a reboot: made at every boot).
    run("ip", "netns", "add", SERVER_NS)
    run("ip", "link", "add", WAN_HOST, "type", "veth", "peer", "name", WAN_SRV, "netns", SERVER_NS)
    run("ip", "addr", "add", WAN_HOST_ADDR, "dev", WAN_HOST)
    run("ip", "link", "set", WAN_HOST, "up")
    ns = ("ip", "-n", SERVER_NS)
    run(*ns, "addr", "add", f"{WAN_SRV_IP}/30", "dev", WAN_SRV)
    run(*ns, "link", "set", WAN_SRV, "up")
    run(*ns, "link", "set", "lo", "up")
    run(*ns, "link", "add", "wgsrv", "type", "wireguard")
    conf = Path("/run/qvw-airvpn-server.conf")
    secret(
        conf,
        f"[Interface]\nPrivateKey = {server_key}ListenPort = {PORT}\n\n"
        f"[Peer]\nPublicKey = {client_pub}\nPresharedKey = {psk}AllowedIPs = {CLIENT_TUN}/32\n",
    )
    run("ip", "netns", "exec", SERVER_NS, "wg", "setconf", "wgsrv", str(conf))
    conf.unlink()
    run(*ns, "addr", "add", f"{SERVER_TUN}/24", "dev", "wgsrv")
    run(*ns, "link", "set", "wgsrv", "mtu", "1320", "up")
    subprocess.Popen(
        ["ip", "netns", "exec", SERVER_NS, "dnsmasq", "--conf-file=/dev/null", "--no-resolv",
         "--no-hosts", "--bind-interfaces", f"--listen-address={SERVER_TUN}",
         "--except-interface=lo", "--pid-file=/run/qvw-dnsmasq.pid", "--user=root",
         f"--host-record={DNS_NAME},{DNS_ANSWER}"],
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    os.sync()


if __name__ == "__main__":
    main()
