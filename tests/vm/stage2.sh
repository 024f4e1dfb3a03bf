#!/bin/sh
# The kernel VM's PID 1 after switch_root in qvw.mode=command (host's /bin/sh, on the
# host's root with a tmpfs overlay). Runs the job's `command` with bash, prints
# "QVW-EXIT <code>" on the serial console and powers off through sysrq.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ip link set lo up
# No udev here: load tun so that /dev/net/tun exists (wireguard-go opens it, nothing
# triggers the module's autoload from a missing device node).
modprobe tun
hostname qvw-vm
export QVW_IN_VM=1
cd /run/qvw-job
/bin/bash /run/qvw-job/command < /dev/null > /dev/console 2>&1
code=$?
sync
echo "QVW-EXIT $code" > /dev/console
echo o > /proc/sysrq-trigger
while :; do :; done  # until the power goes (a sleep here may fail as 9p goes away)
