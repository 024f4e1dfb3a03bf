"""The lab's processes: WireGuard server, resolver, exit-IP endpoint, seeder, confined client.

Each is started through ``procs.start`` (recorded by PID) inside its namespace.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from qbt_vpn_watchdog.lab import procs, qbt_versions
from qbt_vpn_watchdog.lab import topology as t
from qbt_vpn_watchdog.lab.state import FAULT_DIR, PASSWORD_FILE, QBT_VERSION_FILE, STATE_DIR, WG_DIR

SEED_DIR = STATE_DIR / "seed"
TORRENT_NAME = "qvl-test.bin"
TORRENT_SIZE = 4 * 1024 * 1024
TORRENT_FILE = SEED_DIR / "qvl-test.torrent"
SEED_DATA = SEED_DIR / "data"
CLIENT_PROFILE = STATE_DIR / "client-qbt"
CLIENT_DOWNLOADS = STATE_DIR / "downloads"
SEEDER_PROFILE = STATE_DIR / "seeder-qbt"
SEEDER_WEBUI_PORT = 8081
USERNAME = "admin"
EXIT_IP_FAULT_FILE = FAULT_DIR / "exit-ip"
# Names the lab resolver answers, and with what.
DNS_NAMES = {"check.airvpn.lab": t.WHATISMYIP_IP, "tracker.airvpn.lab": t.SEEDER_IP}


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _wait(what: str, cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise t.LabError(f"timed out after {timeout:g} s waiting for {what} (logs: {STATE_DIR}/logs)")


def listening(netns: str, port: int, proto: str = "t") -> bool:
    out = t.run(["ss", f"-Hl{proto}n", f"sport = :{port}"], netns=netns, check=False)
    return bool(out.strip())


# --- WireGuard keys and configs -----------------------------------------------


def _wg(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["wg", *args], input=stdin, capture_output=True, text=True, check=True
    ).stdout.strip()


def write_wireguard_configs() -> None:
    """Server config, and an AirVPN-shaped client config whose private key is in its own file."""
    WG_DIR.mkdir(parents=True, exist_ok=True)
    os.chmod(WG_DIR, 0o700)
    srv_priv, cli_priv, psk = _wg("genkey"), _wg("genkey"), _wg("genpsk")
    srv_pub, cli_pub = _wg("pubkey", stdin=srv_priv), _wg("pubkey", stdin=cli_priv)
    _write_secret(
        WG_DIR / "server.conf",
        f"[Interface]\nPrivateKey = {srv_priv}\nListenPort = {t.WG_PORT}\n\n"
        f"[Peer]\nPublicKey = {cli_pub}\nPresharedKey = {psk}\nAllowedIPs = {t.CLIENT_TUN_IP}/32\n",
    )
    _write_secret(t.client_key(), cli_priv + "\n")
    # As AirVPN's generator writes it, minus the private key (kept in client.key).
    _write_secret(
        t.client_conf(),
        f"[Interface]\nAddress = {t.CLIENT_TUN_IP}/32\nDNS = {t.SERVER_TUN_IP}\nMTU = {t.MTU}\n\n"
        f"[Peer]\nPublicKey = {srv_pub}\nPresharedKey = {psk}\nEndpoint = {t.ENDPOINT}\n"
        f"AllowedIPs = 0.0.0.0/0\nPersistentKeepalive = 15\n",
    )


def start_wireguard_server() -> None:
    if not procs.running("server-wg", "wireguard-go"):
        procs.start(
            "server-wg",
            ["wireguard-go", "-f", t.WG_SERVER],
            netns=t.NS_SRV,
            env={"WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"},
        )
    _wait("the server's wireguard-go interface", lambda: t.link_exists(t.WG_SERVER, t.NS_SRV))
    t.run(["wg", "setconf", t.WG_SERVER, str(WG_DIR / "server.conf")], netns=t.NS_SRV)
    t.run(["ip", "-n", t.NS_SRV, "addr", "replace", f"{t.SERVER_TUN_IP}/24", "dev", t.WG_SERVER])
    t.run(["ip", "-n", t.NS_SRV, "link", "set", t.WG_SERVER, "mtu", str(t.MTU), "up"])


def start_dnsmasq() -> None:
    argv = [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        f"--listen-address={t.SERVER_TUN_IP}",
        "--except-interface=lo",
        "--pid-file=",
        "--user=root",
        "--log-facility=-",
    ]
    for name, addr in DNS_NAMES.items():
        argv.append(f"--host-record={name},{addr}")
    # The lab's names are this resolver's own: a type it has no record of (AAAA) is
    # answered "no such data", as a real resolver does, not REFUSED for want of an
    # upstream (nslookup asks A and AAAA and exits 1 on a REFUSED).
    for domain in sorted({name.split(".", 1)[1] for name in DNS_NAMES}):
        argv.append(f"--local=/{domain}/")
    if not procs.running("dnsmasq", "dnsmasq"):
        procs.start("dnsmasq", argv, netns=t.NS_SRV)
    _wait("dnsmasq", lambda: listening(t.NS_SRV, 53, "u"))


def start_whatismyip() -> None:
    if not procs.running("whatismyip", "python"):
        procs.start(
            "whatismyip",
            [
                sys.executable,
                "-m",
                "qbt_vpn_watchdog.lab.whatismyip",
                "--bind",
                t.WHATISMYIP_IP,
                "--port",
                "80",
                "--fault-file",
                str(EXIT_IP_FAULT_FILE),
            ],
            netns=t.NS_INET,
        )
    _wait("the exit-IP endpoint", lambda: listening(t.NS_INET, 80))


# --- qBittorrent ----------------------------------------------------------------


def pbkdf2_entry(password: str) -> str:
    """qBittorrent's WebUI\\Password_PBKDF2 value: PBKDF2-HMAC-SHA512, 100000 rounds."""
    salt = secrets.token_bytes(16)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 100_000, dklen=64)
    return f'"@ByteArray({base64.b64encode(salt).decode()}:{base64.b64encode(key).decode()})"'


def write_qbt_profile(
    profile: Path,
    *,
    interface: str,
    address: str,
    port: int,
    webui_address: str,
    webui_port: int,
    password: str,
    save_path: Path,
    tracker: bool = False,
    protections: bool = False,
) -> None:
    """A qBittorrent profile. ``protections``: keep the WebUI's host header
    validation on (CSRF and clickjacking protection are on either way), as a
    real install has them; off, the profile is the one the lab used for 4.5."""
    conf = profile / "qBittorrent" / "config" / "qBittorrent.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    save_path.mkdir(parents=True, exist_ok=True)
    lines = [
        "[LegalNotice]",
        "Accepted=true",
        "",
        "[BitTorrent]",
        f"Session\\Interface={interface}",
        f"Session\\InterfaceName={interface}",
        f"Session\\InterfaceAddress={address}",
        f"Session\\Port={port}",
        # Nothing that finds peers or opens ports on its own: the lab has one tracker.
        "Session\\DHTEnabled=false",
        "Session\\LSDEnabled=false",
        "Session\\PeXEnabled=false",
        "Session\\QueueingSystemEnabled=false",
        f"Session\\DefaultSavePath={save_path}",
        "Session\\TempPathEnabled=false",
        "Session\\AddExtensionToIncompleteFiles=false",
        "",
        "[Network]",
        "PortForwardingEnabled=false",
        "",
        "[Preferences]",
        "Connection\\UPnP=false",
        "General\\Locale=en",
        f"Downloads\\SavePath={save_path}",
        f"WebUI\\Address={webui_address}",
        f"WebUI\\Port={webui_port}",
        f"WebUI\\Username={USERNAME}",
        f"WebUI\\Password_PBKDF2={pbkdf2_entry(password)}",
        "WebUI\\LocalHostAuth=true",
        "WebUI\\UseUPnP=false",
    ]
    if not protections:
        lines.append("WebUI\\HostHeaderValidation=false")
    if tracker:
        lines += ["Advanced\\trackerEnabled=true", f"Advanced\\trackerPort={t.TRACKER_PORT}"]
    conf.write_text("\n".join(lines) + "\n")


def make_test_torrent() -> None:
    """A few MiB of random data and a private torrent announcing to the seeder's tracker."""
    SEED_DATA.mkdir(parents=True, exist_ok=True)
    data = SEED_DATA / TORRENT_NAME
    if not data.exists():
        data.write_bytes(os.urandom(TORRENT_SIZE))
    if not TORRENT_FILE.exists():
        t.run(
            [
                "mktorrent",
                "-p",
                "-a",
                f"http://{t.SEEDER_IP}:{t.TRACKER_PORT}/announce",
                "-l",
                "18",
                "-o",
                str(TORRENT_FILE),
                str(data),
            ]
        )


def start_seeder() -> None:
    if not (SEEDER_PROFILE / "qBittorrent").exists():
        write_qbt_profile(
            SEEDER_PROFILE,
            interface=t.INET_HOST_IF,
            address=t.SEEDER_IP,
            port=t.SEEDER_PORT,
            webui_address="127.0.0.1",
            webui_port=SEEDER_WEBUI_PORT,
            password=secrets.token_urlsafe(18),
            save_path=SEED_DATA,
            tracker=True,
        )
    if not procs.running("seeder", "qbittorrent-nox"):
        # A torrent named on the command line is added at start; with the data
        # already in place and the hash check skipped, it seeds at once.
        procs.start(
            "seeder",
            [
                "qbittorrent-nox",
                f"--profile={SEEDER_PROFILE}",
                f"--save-path={SEED_DATA}",
                "--skip-hash-check",
                str(TORRENT_FILE),
            ],
            netns=t.NS_INET,
            env={"HOME": str(SEEDER_PROFILE)},
        )
    _wait("the seeder's tracker", lambda: listening(t.NS_INET, t.TRACKER_PORT), 20)


def client_password() -> str:
    return PASSWORD_FILE.read_text().rstrip("\n")


def client_version() -> str:
    """The qBittorrent version of the confined client: the one the lab went up with."""
    try:
        return QBT_VERSION_FILE.read_text().strip()
    except OSError:
        return qbt_versions.selected()


def write_client_profile() -> None:
    version = qbt_versions.selected()
    qbt_versions.check_installed(version)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    QBT_VERSION_FILE.write_text(version + "\n")
    password = secrets.token_urlsafe(18)
    _write_secret(PASSWORD_FILE, password + "\n")
    write_qbt_profile(
        CLIENT_PROFILE,
        interface=t.WG_CLIENT,
        address="",
        port=t.FORWARDED_PORT,
        webui_address="*",
        webui_port=t.WEBUI_PORT,
        password=password,
        save_path=CLIENT_DOWNLOADS,
        # 5.1 as a NixOS host runs it: every WebUI protection on.
        protections=version != "4.5",
    )


def start_client_qbt() -> None:
    if not procs.running("client-qbt", "qbittorrent-nox"):
        argv = qbt_versions.command(
            ["qbittorrent-nox", f"--profile={CLIENT_PROFILE}"],
            binds=[STATE_DIR],  # the profile and the downloads
            version=client_version(),
        )
        procs.start(
            "client-qbt",
            argv,
            netns=t.NS_VPN,
            env={"HOME": str(CLIENT_PROFILE)},
        )
    _wait("the confined qBittorrent WebUI", lambda: listening(t.NS_VPN, t.WEBUI_PORT), 20)


def rebind_client_qbt() -> None:
    """Put the confined qBittorrent's sockets onto the tunnel as it is now.

    After the lab re-creates the tunnel (a fault's set-up, a heal) qBittorrent
    4.5 often keeps its listen socket bound to the old interface and makes no
    connection at all (the bind check's ``stale_listener``). A fault must break
    only what it names, so the lab does what the watchdog's rebind does.
    Remediation's own restart (``restart_tunnel``) never calls this: there the
    watchdog has to notice and fix it itself, as on a real host.
    """
    if not procs.running("client-qbt", "qbittorrent-nox"):
        return
    from qbt_vpn_watchdog.actions import rebind
    from qbt_vpn_watchdog.sources.links import Links
    from qbt_vpn_watchdog.sources.qbittorrent import Qbittorrent

    qbt = Qbittorrent(f"http://{t.LAN_NS_IP}:{t.WEBUI_PORT}", USERNAME, client_password, 5.0)
    links = Links(t.NS_VPN)
    try:
        rebind(qbt, links, t.WG_CLIENT, t.FORWARDED_PORT, timeout=15.0)
    finally:
        links.close()


def stop_client_qbt() -> bool:
    return procs.stop("client-qbt", "qbittorrent-nox", timeout=10)


def qbt_client(timeout: float = 5.0):
    """A logged-in qbittorrent-api client for the confined qBittorrent, over the LAN veth."""
    import qbittorrentapi

    c = qbittorrentapi.Client(
        host=f"http://{t.LAN_NS_IP}:{t.WEBUI_PORT}",
        username=USERNAME,
        password=client_password(),
        REQUESTS_ARGS={"timeout": timeout, "proxies": {"http": None, "https": None}},
        VERIFY_WEBUI_CERTIFICATE=False,
        DISABLE_LOGGING_DEBUG_OUTPUT=True,
    )
    c.auth_log_in()
    return c
