"""A real qbittorrent-nox in a throwaway network namespace, for tests and the recorder.

Safety: the namespace gets no route, NAT or forwarding to the real network.
Its only links are ``lo``, an optional in-namespace veth pair standing in for
the tunnel (both ends inside the namespace), and an optional veth to the root
namespace on an on-link /30 (169.254.77.0/30 by default), so the root
namespace can reach the WebUI and nothing else. DHT, PeX, LSD, UPnP/NAT-PMP and
the GeoIP download are off in the profile anyway.

Every global name starts with ``qvq``. ``stop()`` removes the process, the
namespace (which takes its links with it) and the root veth end.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class QbtNox:
    netns: str  # must start with "qvq"
    # A stand-in for the tunnel: a veth pair inside the namespace, this end bound.
    tunnel: str | None = "qvq-tun"
    tunnel_address: str = "10.77.0.2/32"
    # veth to the root namespace: (root end, ns end, root address, ns address)
    root_link: tuple[str, str, str, str] | None = None
    webui_address: str = "*"
    extra_prefs: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        if not self.netns.startswith("qvq"):
            raise ValueError("test namespaces must start with qvq")

    @property
    def host(self) -> str:
        """The WebUI address as seen from where the caller talks to it."""
        return self.root_link[3].split("/")[0] if self.root_link else "127.0.0.1"

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
            "WebUI\\HostHeaderValidation=false",
            "WebUI\\CSRFProtection=false",
            *(f"{k}={v}" for k, v in self.extra_prefs.items()),
        ]
        (conf_dir / "qBittorrent.conf").write_text("\n".join(lines) + "\n")

    def _network(self) -> None:
        _ip("netns", "add", self.netns)
        _ip("-n", self.netns, "link", "set", "lo", "up")
        if self.tunnel:
            peer = self.tunnel + "p"
            _ip("-n", self.netns, "link", "add", self.tunnel, "type", "veth", "peer", "name", peer)
            _ip("-n", self.netns, "addr", "add", self.tunnel_address, "dev", self.tunnel)
            _ip("-n", self.netns, "link", "set", peer, "up")
            _ip("-n", self.netns, "link", "set", self.tunnel, "up")
        if self.root_link:
            root, inner, root_addr, inner_addr = self.root_link
            _ip("link", "add", root, "type", "veth", "peer", "name", inner, "netns", self.netns)
            _ip("addr", "add", root_addr, "dev", root)
            _ip("link", "set", root, "up")
            _ip("-n", self.netns, "addr", "add", inner_addr, "dev", inner)
            _ip("-n", self.netns, "link", "set", inner, "up")

    def start(self, timeout: float = 15.0) -> QbtNox:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.netns}-"))
        try:
            self._profile()
            self._network()
            log = open(self.workdir / "qbittorrent.out", "wb")  # noqa: SIM115
            self.proc = subprocess.Popen(
                [
                    "ip", "netns", "exec", self.netns,
                    "qbittorrent-nox", f"--profile={self.workdir / 'profile'}",
                ],
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
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self.root_link:
            _ip("link", "del", self.root_link[0], check=False)
        _ip("netns", "del", self.netns, check=False)
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
