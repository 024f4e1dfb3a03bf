"""A real qbittorrent-nox in a throwaway network namespace, for tests and the recorder.

Which qBittorrent: ``QBT_VERSION`` (``4.5``, the default, or ``5.1``; see
watchdog/qbt_vpn_watchdog/lab/qbt_versions.py). 4.5's profile turns the WebUI's host header
validation and CSRF protection off, as the tests always did; 5.1's keeps every
WebUI protection a real install has on (CSRF, host header validation,
clickjacking), and everything must work with them.

Safety: the namespace gets no route, NAT or forwarding to the real network.
Its only links are ``lo``, an optional in-namespace veth pair standing in for
the tunnel (both ends inside the namespace), and an optional veth to the root
namespace on an on-link /30 taken from 169.254.64.0/18, so the root namespace
can reach the WebUI and nothing else. DHT, PeX, LSD, UPnP/NAT-PMP and the
GeoIP download are off in the profile anyway.

Names are unique per instance (``qvq-<tag>-<random>``; root veth ends
``qvq<random>h``), and the /30 is one no other link in the root namespace
uses, so two test sessions on one machine never collide. ``stop()`` removes
only what this instance created: its process, its namespace (which takes its
links with it) and its root veth end.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from qbt_vpn_watchdog.lab import qbt_versions

USERNAME = "admin"
PASSWORD = "qvq-test-Pa55word"  # a throwaway WebUI password for tests only
WEBUI_PORT = 8080
LISTEN_PORT = 51413


def pbkdf2_setting(password: str, salt: bytes | None = None) -> str:
    """qBittorrent's WebUI\\Password_PBKDF2 value (PBKDF2-HMAC-SHA512, 100000 rounds)."""
    salt = salt or os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 100_000, dklen=64)
    return f'"@ByteArray({base64.b64encode(salt).decode()}:{base64.b64encode(key).decode()})"'


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


# On-link /30s for the root veth come from here (link-local: never routed off the machine).
ROOT_LINK_POOL = ipaddress.ip_network("169.254.64.0/18")
_ALLOC_LOCK = Path("/run/lock/qvq-root-link.lock")


@contextlib.contextmanager
def _alloc_lock():
    # Held from choosing a /30 until its address is on the link, so two
    # sessions never pick the same one.
    _ALLOC_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_ALLOC_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _free_slash30() -> ipaddress.IPv4Network:
    used = []
    for line in _ip("-4", "-o", "addr", "show").stdout.splitlines():
        f = line.split()
        if "inet" in f:
            used.append(ipaddress.ip_interface(f[f.index("inet") + 1]).network)
    for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines():
        f = line.split()
        with contextlib.suppress(ValueError, IndexError):
            dst = f[1] if f[0] in ("blackhole", "unreachable", "local", "broadcast") else f[0]
            used.append(ipaddress.ip_network(dst, strict=False))
    subnets = list(ROOT_LINK_POOL.subnets(new_prefix=30))
    for net in random.sample(subnets, 200):
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError(f"no free /30 in {ROOT_LINK_POOL} for a test veth")


def version() -> str:
    """The qBittorrent version the tests run (QBT_VERSION: 4.5 or 5.1)."""
    return qbt_versions.selected()


@dataclass
class QbtNox:
    tag: str  # a short word for the namespace name: qvq-<tag>-<random>
    # A stand-in for the tunnel: a veth pair inside the namespace, this end bound.
    tunnel: str | None = "qvq-tun"
    tunnel_address: str = "10.77.0.2/32"
    # A veth to the root namespace on a free on-link /30, to reach the WebUI from there.
    root_link: bool = False
    webui_address: str = "*"
    extra_prefs: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None
    proc: subprocess.Popen | None = None
    version: str = field(default_factory=version)

    def __post_init__(self) -> None:
        token = secrets.token_hex(3)
        self.netns = f"qvq-{self.tag}-{token}"
        self.root_if, self.inner_if = f"qvq{token}h", f"qvq{token}n"
        self.root_addr = self.inner_addr = ""
        # What this instance made, so that stop() removes exactly that.
        self._made_netns = self._made_root_if = False

    @property
    def protections(self) -> bool:
        """Does this profile keep the WebUI protections on (CSRF, host header validation)?"""
        return self.version != "4.5"

    @property
    def host(self) -> str:
        """The WebUI address as seen from where the caller talks to it."""
        return self.inner_addr.split("/")[0] if self.root_link else "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{WEBUI_PORT}"

    @property
    def save_path(self) -> Path:
        assert self.workdir
        return self.workdir / "downloads"

    def _profile(self) -> None:
        assert self.workdir
        conf_dir = self.workdir / "profile" / "qBittorrent" / "config"
        conf_dir.mkdir(parents=True)
        self.save_path.mkdir()
        iface = self.tunnel or ""
        lines = [
            "[LegalNotice]",
            "Accepted=true",
            "",
            "[BitTorrent]",
            "Session\\DHTEnabled=false",
            "Session\\PeXEnabled=false",
            "Session\\LSDEnabled=false",
            f"Session\\Interface={iface}",
            f"Session\\InterfaceName={iface}",
            f"Session\\Port={LISTEN_PORT}",
            f"Session\\DefaultSavePath={self.save_path}",
            "Session\\QueueingSystemEnabled=false",
            "",
            "[Preferences]",
            "Connection\\UPnP=false",
            "Connection\\ResolvePeerCountries=false",
            f"WebUI\\Port={WEBUI_PORT}",
            f"WebUI\\Address={self.webui_address}",
            f"WebUI\\Username={USERNAME}",
            f"WebUI\\Password_PBKDF2={pbkdf2_setting(PASSWORD)}",
            "WebUI\\LocalHostAuth=true",
        ]
        if not self.protections:
            lines += ["WebUI\\HostHeaderValidation=false", "WebUI\\CSRFProtection=false"]
        lines += [f"{k}={v}" for k, v in self.extra_prefs.items()]
        (conf_dir / "qBittorrent.conf").write_text("\n".join(lines) + "\n")

    def _network(self) -> None:
        _ip("netns", "add", self.netns)  # fails if the name exists: then it is not ours
        self._made_netns = True
        _ip("-n", self.netns, "link", "set", "lo", "up")
        if self.tunnel:
            peer = self.tunnel + "p"
            _ip("-n", self.netns, "link", "add", self.tunnel, "type", "veth", "peer", "name", peer)
            _ip("-n", self.netns, "addr", "add", self.tunnel_address, "dev", self.tunnel)
            _ip("-n", self.netns, "link", "set", peer, "up")
            _ip("-n", self.netns, "link", "set", self.tunnel, "up")
        if self.root_link:
            with _alloc_lock():
                net = _free_slash30()
                a, b = list(net.hosts())
                self.root_addr, self.inner_addr = f"{a}/30", f"{b}/30"
                _ip("link", "add", self.root_if, "type", "veth", "peer", "name", self.inner_if,
                    "netns", self.netns)  # fmt: skip
                self._made_root_if = True
                _ip("addr", "add", self.root_addr, "dev", self.root_if)
            _ip("link", "set", self.root_if, "up")
            _ip("-n", self.netns, "addr", "add", self.inner_addr, "dev", self.inner_if)
            _ip("-n", self.netns, "link", "set", self.inner_if, "up")

    def start(self, timeout: float = 15.0) -> QbtNox:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.netns}-"))
        try:
            self._profile()
            self._network()
            argv = qbt_versions.command(
                ["qbittorrent-nox", f"--profile={self.workdir / 'profile'}"],
                binds=[self.workdir],
                version=self.version,
            )
            log = open(self.workdir / "qbittorrent.out", "wb")  # noqa: SIM115
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *argv],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            log.close()
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"qbittorrent-nox exited: {self.output()}")
            if self.root_link:
                try:
                    urllib.request.urlopen(f"{self.url}/api/v2/app/version", timeout=1)
                except urllib.error.HTTPError:
                    return  # 403 before login: the WebUI answers
                except OSError:
                    time.sleep(0.1)
                    continue
                return
            r = subprocess.run(
                ["ip", "netns", "exec", self.netns, "curl", "-s", "-o", "/dev/null",
                 "-w", "%{http_code}", f"http://127.0.0.1:{WEBUI_PORT}/api/v2/app/version"],
                capture_output=True, text=True,
            )  # fmt: skip
            if r.stdout.strip() not in ("", "000"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"qbittorrent-nox WebUI did not answer within {timeout} s")

    def output(self) -> str:
        try:
            return (self.workdir / "qbittorrent.out").read_text(errors="replace")[-2000:]
        except (OSError, TypeError):
            return ""

    def stop(self) -> None:
        """Remove what this instance created, and nothing else."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self._made_root_if:
            _ip("link", "del", self.root_if, check=False)
            self._made_root_if = False
        if self._made_netns:
            _ip("netns", "del", self.netns, check=False)
            self._made_netns = False
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def make_torrent(self, name: str, size: int = 64 * 1024, *, with_data: bool = True) -> bytes:
        """A small single-file torrent (no tracker); its data in save_path when with_data."""
        assert self.workdir
        src = self.workdir / "src" / name
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(os.urandom(size))
        out = self.workdir / f"{name}.torrent"
        subprocess.run(
            ["mktorrent", "-p", "-l", "15", "-o", str(out), str(src)],
            check=True, capture_output=True,
        )  # fmt: skip
        if with_data:
            shutil.copy(src, self.save_path / name)
        return out.read_bytes()
