"""Names for what a test session creates where other sessions can see it.

Network namespaces, links in the root namespace and wireguard-go's UAPI
sockets (/var/run/wireguard/NAME.sock) are machine-wide. Two test sessions on
one machine (two worktrees, CI beside a developer) must never collide on them,
nor delete each other's: every such name carries this session's token, and a
session deletes only names it created.
"""

from __future__ import annotations

import secrets

SESSION = secrets.token_hex(2)  # 4 hex digits, one per test process


def unique(name: str) -> str:
    """``name`` made this session's own: ``qvp-dns`` -> ``qvp-dns-1a2b``."""
    return f"{name}-{SESSION}"
