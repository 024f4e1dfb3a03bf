#!/usr/bin/env bash
# Installs everything qbt-vpn-watchdog, its lab and its tests need on a fresh
# Debian 12 machine (as root): Debian's packages for the real parts, qBittorrent
# 5.1 in a Debian 13 tree beside Debian 12's 4.5 (scripts/setup-qbt51.sh), and
# a virtualenv in .venv with the package (editable) and the test tools.
# Idempotent; about 100-120 s the first time, a few seconds after that.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs Debian packages)" >&2
    exit 2
fi

PACKAGES=(
    wireguard-go wireguard-tools   # userspace WireGuard for the lab; `wg`
    qbittorrent-nox mktorrent      # the confined client, the seeder, the test torrent
    nftables iproute2 dnsmasq      # kill switch and faults; namespaces; the VPN's resolver
    prometheus prometheus-alertmanager  # promtool/amtool, and the real ones for the e2e tests
    nix-bin                        # nix-instantiate, to parse and evaluate nix/
    systemd                        # systemd-analyze verify for the units NixOS renders (never PID 1 here)
    debootstrap                    # the Debian 13 tree that holds qBittorrent 5.1
    qemu-system-x86 busybox-static kmod  # the kernel VM (tests/vm): the kernel's WireGuard
    prometheus-node-exporter apache2-utils  # the same web-config.yml in a real node_exporter; htpasswd
    iputils-ping bind9-dnsutils    # the runbook's ping and nslookup lines, run against the lab
    openssl curl python3-venv
)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    # policy-rc.d 101: never let a package start its daemon on this machine;
    # the lab and the tests start exactly the processes they need.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# qBittorrent 5.1 (QBT_VERSION=5.1), kept in /var/cache/qbt-vpn-watchdog/trixie.
bash scripts/setup-qbt51.sh

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
# The kernel VM's kernel (Debian's 6.1, unpacked, not installed) and initramfs,
# cached in /var/cache/qbt-vpn-watchdog/vm; a no-op once there (about 10 s the first time).
bash tests/vm/image.sh
echo "setup.sh: ready (.venv/bin/qbt-vpn-watchdog)"
