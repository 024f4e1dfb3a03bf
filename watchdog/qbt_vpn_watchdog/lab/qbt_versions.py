"""Which qBittorrent the lab, the tests and the benchmarks run: ``QBT_VERSION``.

``4.5`` (the default) is Debian 12's qbittorrent-nox 4.5.2 (Web API 2.8.19),
run as installed. ``5.1`` is Debian 13's qbittorrent-nox 5.1.0 (Web API
2.11.4), what NixOS ships in the 5.x line, from a minimal Debian 13 tree that
scripts/setup-qbt51.sh prepares under /var/cache/qbt-vpn-watchdog/trixie
(``QBT51_ROOT`` elsewhere). What differs between the two is in
docs/qbittorrent-versions.md.

5.1 runs chrooted into that tree inside a private mount namespace
(``unshare --mount``, so nothing mounted here is seen outside): its own /proc,
and the host directories it reads and writes (profile, downloads, torrents)
bound at the same paths, so every path means the same on both versions. The
process keeps its PID through the ``exec`` chain, so the lab's PID file and
``procs.alive`` (which looks for "qbittorrent-nox" in the command line) work
unchanged.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from qbt_vpn_watchdog.lab.topology import LabError

ENV = "QBT_VERSION"
VERSIONS = ("4.5", "5.1")
DEFAULT = "4.5"
ROOT_ENV = "QBT51_ROOT"
DEFAULT_ROOT = Path("/var/cache/qbt-vpn-watchdog/trixie")
READY_MARKER = ".qbt-vpn-watchdog-ready"  # written by scripts/setup-qbt51.sh when complete


class VersionError(LabError):
    """QBT_VERSION names no supported version, or that version is not installed."""


def selected() -> str:
    """The version QBT_VERSION asks for (default 4.5); VersionError for anything else."""
    value = os.environ.get(ENV, "").strip() or DEFAULT
    if value not in VERSIONS:
        raise VersionError(
            f"{ENV}={value!r} is not a supported qBittorrent version; use one of "
            + ", ".join(VERSIONS)
        )
    return value


def chroot_root() -> Path:
    return Path(os.environ.get(ROOT_ENV, "").strip() or DEFAULT_ROOT)


def check_installed(version: str | None = None) -> None:
    """VersionError naming what to run when the selected version is not installed."""
    version = version or selected()
    if version == "5.1":
        root = chroot_root()
        if not (root / READY_MARKER).exists() or not (root / "usr/bin/qbittorrent-nox").exists():
            raise VersionError(
                f"{ENV}=5.1 needs qBittorrent 5.1 in {root}, which is not there: "
                "run `sudo scripts/setup.sh` (or scripts/setup-qbt51.sh)"
            )
    elif not any(
        (Path(d) / "qbittorrent-nox").exists() for d in os.environ.get("PATH", "").split(":")
    ):
        raise VersionError("qbittorrent-nox 4.5 is not installed: run `sudo scripts/setup.sh`")


# Run by `sh -c` inside the new mount namespace: $1 the tree, $2 how many host
# paths to bind, then those paths, then the command. tmpfs over /tmp and /run
# first, so the mount points made there vanish with the namespace instead of
# piling up in the cached tree.
_CHROOT_SCRIPT = r"""set -e
root=$1; n=$2; shift 2
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
while [ "$n" -gt 0 ]; do
    mkdir -p "$root$1"
    mount --bind "$1" "$root$1"
    shift; n=$((n - 1))
done
exec chroot "$root" "$@"
"""


def command(argv: list[str], binds: Iterable[Path | str] = (), version: str | None = None):
    """``argv`` (``qbittorrent-nox ...``) as the selected version runs it.

    ``binds``: host directories the process needs (its profile, save path,
    torrent files); for 5.1 they are bound into the tree at the same paths.
    To be run inside the target namespace (``ip netns exec NS`` + this).
    """
    version = version or selected()
    if version == "4.5":
        return list(argv)
    check_installed(version)
    paths = [str(Path(b).resolve()) for b in binds]
    for p in paths:
        if not Path(p).is_dir():
            raise VersionError(f"cannot bind {p} into the qBittorrent 5.1 tree: not a directory")
    return [
        "unshare", "--mount", "--propagation", "private",
        "sh", "-c", _CHROOT_SCRIPT, "qbt-5.1", str(chroot_root()), str(len(paths)), *paths,
        *argv,
    ]  # fmt: skip


def binary_version(version: str | None = None) -> str:
    """What the installed binary of that version says (``qBittorrent v5.1.0`` -> ``v5.1.0``)."""
    argv = ["qbittorrent-nox", "--version"]
    if (version or selected()) == "5.1":
        check_installed("5.1")
        argv = ["chroot", str(chroot_root()), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.split()
    return out[-1] if out else ""


def matches(reported: str, version: str | None = None) -> bool:
    """Does a version as qBittorrent reports it ("v5.1.0") belong to ``version`` ("5.1")?"""
    version = version or selected()
    return reported.strip().lstrip("v").startswith(version + ".")
