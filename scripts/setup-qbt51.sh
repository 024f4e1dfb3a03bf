#!/usr/bin/env bash
# qBittorrent 5.1 for the lab and the tests, beside Debian 12's 4.5: a minimal
# Debian 13 (trixie) tree with its qbittorrent-nox 5.1.0, run by chroot inside
# a network namespace (see docs/qbittorrent-versions.md).
#
# The tree lives outside the git tree and is kept between runs
# (QBT51_ROOT, default /var/cache/qbt-vpn-watchdog/trixie). Idempotent: a tree
# whose qbittorrent-nox answers --version is left as it is (about 0.1 s).
# First run: about 30-60 s and 300 MB (apt lists and .deb cache removed).
# Called by scripts/setup.sh; as root.
set -euo pipefail

ROOT="${QBT51_ROOT:-/var/cache/qbt-vpn-watchdog/trixie}"
MIRROR="${QBT51_MIRROR:-http://deb.debian.org/debian}"
SUITE=trixie
DONE="$ROOT/.qbt-vpn-watchdog-ready"

die() {
    echo "setup-qbt51.sh: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and chroot need it)"

# Two setups at once (two worktrees, CI and a developer) build the tree once.
mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9

if [ -f "$DONE" ] && chroot "$ROOT" qbittorrent-nox --version >/dev/null 2>&1; then
    echo "setup-qbt51.sh: qBittorrent $(chroot "$ROOT" qbittorrent-nox --version | awk '{print $2}') ready in $ROOT"
    exit 0
fi

if ! command -v debootstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends debootstrap >/dev/null \
        || die "could not install debootstrap from Debian's packages (apt-get install debootstrap failed)"
fi

# Fail early, and say so, when the mirror cannot be reached (rather than after
# debootstrap's long retries and a half-made tree).
if ! curl -fsS --max-time 30 -o /dev/null "$MIRROR/dists/$SUITE/Release"; then
    die "Debian's mirror $MIRROR is unreachable (GET $MIRROR/dists/$SUITE/Release failed); \
qBittorrent 5.1 (QBT_VERSION=5.1) cannot be prepared. Set QBT51_MIRROR to a reachable Debian mirror and run again."
fi

# A tree left half-made by an interrupted run is started again from scratch.
# Only ever this one directory, which this script alone creates.
if [ -e "$ROOT" ] && [ ! -f "$DONE" ]; then
    for m in proc sys dev/pts; do
        mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m"
    done
    rm -rf --one-file-system "$ROOT"
fi

if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
    echo "setup-qbt51.sh: debootstrap $SUITE (minbase) into $ROOT ..."
    debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
        || die "debootstrap $SUITE from $MIRROR failed (log: $ROOT.debootstrap.log)"
fi

# Never let a package start a daemon, in the tree either.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    || die "apt-get update inside $ROOT failed (mirror $MIRROR)"
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends qbittorrent-nox >/dev/null \
    || die "apt-get install qbittorrent-nox inside $ROOT failed"
# 116 MB of apt lists and .deb cache are not needed to run it.
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT.debootstrap.log"

version="$(chroot "$ROOT" qbittorrent-nox --version 2>/dev/null | awk '{print $2}')"
case "$version" in
    v5.1*) ;;
    *) die "qbittorrent-nox in $ROOT reports '$version', expected v5.1.x" ;;
esac
touch "$DONE"
echo "setup-qbt51.sh: qBittorrent $version ready in $ROOT ($(du -sh --one-file-system "$ROOT" | cut -f1))"
