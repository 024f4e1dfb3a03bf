#!/usr/bin/env bash
# Builds the kernel VM's cache: Debian 12's own 6.1 kernel (it ships
# wireguard.ko) unpacked, not installed, and a small initramfs of static
# busybox plus the modules needed to mount this machine's root over 9p.
# Idempotent: a complete cache is left alone (`--force` rebuilds it).
#
#   $QVW_VM_CACHE (default /var/cache/qbt-vpn-watchdog/vm)
#     kernel/            the .deb unpacked with `dpkg -x`, then `depmod`
#     vmlinuz            -> kernel/boot/vmlinuz-VERSION
#     initramfs.cpio.gz
#     VERSION            the kernel version; written last: the cache is complete
#
# Needs: qemu-system-x86, busybox-static, kmod (scripts/setup.sh installs them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${QVW_VM_CACHE:-/var/cache/qbt-vpn-watchdog/vm}"

stamp="$(cat "$here/init" "$here/image.sh" | sha256sum)"
if [ "${1:-}" != "--force" ] && [ -s "$cache/VERSION" ] && [ -f "$cache/initramfs.cpio.gz" ] \
    && [ "$(cat "$cache/init.sha256" 2>/dev/null)" = "$stamp" ]; then
    exit 0
fi
mkdir -p "$cache"
cd "$cache"
rm -f VERSION

if [ ! -d kernel/lib/modules ] || [ "${1:-}" = "--force" ]; then
    # The kernel linux-image-amd64 points at today (Debian renames the package
    # with every ABI bump: linux-image-6.1.0-NN-amd64).
    kernel_pkg() {
        apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
    }
    pkg="$(kernel_pkg)"
    if [ -z "$pkg" ]; then
        apt-get -o DPkg::Lock::Timeout=300 update -qq
        pkg="$(kernel_pkg)"
    fi
    if [ -z "$pkg" ]; then
        echo "image.sh: apt knows no linux-image-amd64 (run apt-get update)" >&2
        exit 1
    fi
    rm -rf kernel ./*.deb
    # apt's sandbox user cannot write here; the download is a plain .deb in this directory.
    apt-get -o DPkg::Lock::Timeout=300 -o APT::Sandbox::User=root download "$pkg" >/dev/null
    dpkg -x ./"$pkg"_*.deb kernel
    rm -f ./*.deb
fi
version="$(ls kernel/lib/modules | head -n1)"
# dpkg -x does not run the package's postinst: make modules.dep ourselves.
depmod -b kernel "$version"
ln -sfn "kernel/boot/vmlinuz-$version" vmlinuz

# --- initramfs -----------------------------------------------------------------------
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{bin,dev,proc,sys,mnt/root,mnt/rw,mnt/job,newroot,lib/modules}
cp /bin/busybox "$work/bin/busybox"
for cmd in sh mount umount mkdir insmod switch_root cat cp echo sleep poweroff; do
    ln -s busybox "$work/bin/$cmd"
done
# Modules the init needs before the host's root is there, with their
# dependencies in load order (after that, the host's modprobe loads the rest).
: > "$work/modules"
for m in virtio_pci 9pnet_virtio 9p overlay virtio_blk ext4; do
    modprobe -d "$cache/kernel" -S "$version" --show-depends "$m" | while read -r kind path _; do
        [ "$kind" = insmod ] || continue
        name="$(basename "$path")"
        grep -qx "$name" "$work/modules" && continue
        cp "$path" "$work/lib/modules/$name"
        echo "$name" >> "$work/modules"
    done
done
cp "$here/init" "$work/init"
chmod +x "$work/init"
(cd "$work" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > initramfs.cpio.gz.new
mv initramfs.cpio.gz.new initramfs.cpio.gz
echo "$stamp" > init.sha256
echo "$version" > VERSION
echo "image.sh: kernel $version and initramfs ready in $cache"
