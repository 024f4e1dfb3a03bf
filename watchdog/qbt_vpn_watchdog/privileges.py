"""What a command needs from the kernel, said before it fails with "Operation not permitted".

Entering the confined network namespace (setns) needs CAP_SYS_ADMIN; reading
WireGuard over generic netlink, rtnetlink changes and sock_diag need
CAP_NET_ADMIN. Root has both; a systemd unit can grant exactly these two
(AmbientCapabilities=CAP_SYS_ADMIN CAP_NET_ADMIN).
"""

from __future__ import annotations

import os
from pathlib import Path

CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
NAMES = {CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_NET_ADMIN: "CAP_NET_ADMIN"}
NEEDS = "root, or CAP_SYS_ADMIN + CAP_NET_ADMIN"


def effective(status: str | None = None) -> int:
    """The effective capability mask of this process (CapEff in /proc/self/status)."""
    if status is None:
        status = Path("/proc/self/status").read_text()
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def missing(mask: int | None = None) -> list[str]:
    """The needed capabilities this process lacks, by name ([] = it may go on)."""
    mask = effective() if mask is None else mask
    return [name for cap, name in sorted(NAMES.items(), reverse=True) if not mask >> cap & 1]


def refusal(command: str, mask: int | None = None) -> str | None:
    """The message for a command that cannot work without them, or None when it can."""
    lacking = missing(mask)
    if not lacking:
        return None
    return (
        f"qbt-vpn-watchdog {command}: needs {NEEDS} (to enter the network namespace and"
        f" read WireGuard over netlink); this process (uid {os.geteuid()}) lacks"
        f" {' and '.join(lacking)}"
    )
