"""Sockets opened inside a network namespace, and the namespace's resolver.

A socket belongs to the namespace it was *created* in, for its whole life, so
a probe only has to create its socket inside the namespace; everything after
(connect, send, TLS) needs no namespace switch.

How: the calling thread joins the namespace with setns(2), creates the socket
and returns to its own namespace. setns(CLONE_NEWNET) changes only the calling
thread, so the other check threads are unaffected. This costs tens of
microseconds, against about 8 ms for pyroute2's ``netns.create_socket`` (which
forks a child per socket; measured in tests/sources/test_netns_sockets.py).

We do not use pyroute2's ``pushns``/``popns``: ``pushns(name)`` calls
``setns(name)`` with its default ``O_CREAT`` (a typo would silently create an
empty namespace), and its saved-namespace stack is one global list shared by
all threads. The namespace file is opened read-only here, never created.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator

from qbt_vpn_watchdog import libc
from qbt_vpn_watchdog.sources import SourceError, os_error

NETNS_RUN_DIR = "/run/netns"  # where `ip netns add` bind-mounts namespaces
CLONE_NEWNET = 0x40000000

def netns_ident(netns: str | None) -> tuple[int, int] | None:
    """(device, inode) of /run/netns/NAME; SourceError(kind="missing") when it does not exist."""
    if not netns:
        return None
    path = f"/run/netns/{netns}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SourceError(
            f"network namespace {netns} does not exist ({path})", kind="missing"
        ) from None
    return st.st_dev, st.st_ino


def netns_path(netns: str) -> str:
    """The bind-mount path of a named namespace; rejects names that are paths."""
    if not netns or "/" in netns or netns in (".", ".."):
        raise SourceError(f"invalid network namespace name {netns!r}", kind="missing")
    return os.path.join(NETNS_RUN_DIR, netns)


def open_netns(netns: str) -> int:
    """A read-only fd of the namespace; ``SourceError(kind="missing")`` when it does not exist."""
    path = netns_path(netns)
    try:
        # O_RDONLY without O_CREAT: a missing namespace stays missing.
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceError(
            f"network namespace {netns!r} does not exist ({path})", kind="missing"
        ) from None
    except OSError as e:
        raise os_error(e, f"cannot open network namespace {netns!r}", kind="missing") from None


def _enter(fd: int, what: str) -> None:
    try:
        libc.setns(fd, CLONE_NEWNET)
    except OSError as e:
        raise OSError(e.errno, f"setns({what}): {e.strerror}") from None


@contextlib.contextmanager
def entered(netns: str | None) -> Iterator[None]:
    """Run the body with this thread inside the named namespace (None: where it is).

    Only what the body *creates* (sockets, netlink sockets) stays in the
    namespace; the thread itself is back in its own namespace afterwards.
    Raises ``SourceError(kind="missing")`` when the namespace does not exist;
    it never creates one.
    """
    if netns is None:
        yield
        return
    target = open_netns(netns)
    try:
        # /proc/thread-self: this thread's namespace (/proc/self is the main thread's).
        try:
            home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise os_error(e, "cannot open this thread's own network namespace") from None
        try:
            try:
                _enter(target, netns)
            except OSError as e:
                # EINVAL: the file is not a network namespace (a stale mount point).
                kind = "missing" if e.errno in (errno.EINVAL, errno.ENOENT) else "unreachable"
                raise SourceError(
                    f"cannot enter network namespace {netns!r}: {e.strerror}", kind=kind
                ) from None
            try:
                yield
            finally:
                # If this failed, the thread would keep working in the wrong
                # namespace: that must never be silent.
                _enter(home, "back to the thread's own namespace")
        finally:
            os.close(home)
    finally:
        os.close(target)


def socket_in(
    netns: str | None,
    family: int = socket.AF_INET,
    type: int = socket.SOCK_STREAM,
    proto: int = 0,
) -> socket.socket:
    """A new socket created inside the named namespace (None: the current one).

    Raises ``SourceError(kind="missing")`` when the namespace does not exist
    (it never creates one), ``LocalResourceError`` when no file descriptor is left.
    """
    with entered(netns):
        try:
            return socket.socket(family, type, proto)
        except PermissionError:
            raise  # raw sockets without CAP_NET_RAW: the caller says what is missing
        except OSError as e:
            where = f" in network namespace {netns!r}" if netns else ""
            raise os_error(e, f"cannot open a socket{where}") from None


def resolv_conf_nameserver(netns: str | None, etc: str = "/etc") -> str | None:
    """The first ``nameserver`` of the resolv.conf processes in the namespace use.

    With a namespace: ``/etc/netns/<ns>/resolv.conf`` (what ``ip netns exec``
    bind-mounts over /etc/resolv.conf). When that file does not exist, processes
    in the namespace see the host's ``/etc/resolv.conf``, so that is read: the
    dns check then shows whether that resolver is reached through the tunnel.
    """
    candidates = []
    if netns:
        candidates.append(os.path.join(etc, "netns", netns, "resolv.conf"))
    candidates.append(os.path.join(etc, "resolv.conf"))
    for path in candidates:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read(65536)
        except FileNotFoundError:
            continue
        except OSError:
            return None
        return _first_nameserver(text)
    return None


def _first_nameserver(text: str) -> str | None:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            # An IPv6 link-local server may carry a scope ("fe80::1%eth0").
            return words[1]
    return None
