"""One long-lived pyroute2 socket, always used from the same thread.

Why a thread of its own: pyroute2 0.9's synchronous sockets keep their event
loop and kernel socket in thread-local storage. The check runner calls readers
from a fresh thread each cycle, and every new thread would silently open
another netlink socket (forking a child to enter the namespace each time) and
another event loop, kept until ``close()``: a leak at one cycle every 10 s for
years. So every call is handed to one worker thread that owns the socket.

The socket is opened lazily, reopened after any error that is not a kernel
answer (``NetlinkError``), and abandoned if a call hangs past its timeout (the
stuck worker closes it whenever it returns).

Namespaces: a socket keeps the namespace it was opened in alive even after
``ip netns del``; if the namespace is then re-created under the same name (a
restarted VPN service), the old socket would keep reading the dead one. So each
call checks that ``/run/netns/NAME`` still exists (else SourceError "missing",
never a silent creation) and is still the same namespace (inode), and reopens
the socket when it is not.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from types import ModuleType
from typing import Any, TypeVar

from qbt_vpn_watchdog.sources import SourceError
from qbt_vpn_watchdog.sources.netns import netns_ident  # noqa: F401 - re-exported for callers

T = TypeVar("T")


def pyroute2_module(name: str) -> ModuleType:
    """Import ``pyroute2.<...>`` without running pyroute2's package ``__init__``.

    Any ``import pyroute2.x`` first runs the package's ``__init__``, which
    imports every pyroute2 module (NDB, IPDB, conntrack, nftables, ...): 163
    modules, against the few dozen the sockets used here need (measured for the
    WireGuard socket alone: +10.9 MiB RSS against +2.9 MiB). So unless pyroute2
    is already imported in this process, its package is registered without
    running its ``__init__`` (``module_from_spec`` creates the package module,
    with its ``__path__``, without executing it) and the submodules are
    imported from it. Should anything in the process ask the package for a name
    it has not got (``from pyroute2 import IPRoute``), its ``__init__`` runs
    then, once, and the name is there as usual.
    """
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is not None and spec.loader is not None and spec.submodule_search_locations:
            package = importlib.util.module_from_spec(spec)
            loader = spec.loader

            def complete(attr: str) -> Any:
                if attr.startswith("__"):
                    raise AttributeError(attr)
                # `from pyroute2 import netns` (pyroute2's own modules do this): a submodule.
                if importlib.util.find_spec(f"pyroute2.{attr}") is not None:
                    return importlib.import_module(f"pyroute2.{attr}")
                del package.__getattr__
                loader.exec_module(package)  # the package's __init__, as a plain import would
                return getattr(package, attr)

            package.__getattr__ = complete  # type: ignore[attr-defined]
            sys.modules["pyroute2"] = package
    return importlib.import_module(name)


pyroute2_module("pyroute2.netlink")  # the package registered lean before the import below
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402


def closed_on_failure(cls: type[T]) -> type[T]:
    """A subclass of a pyroute2 socket class that closes itself when its constructor fails.

    pyroute2 0.9 opens the socket and an event loop before it can fail (no
    WireGuard module, namespace gone); the half-built object is unreachable,
    so each failed attempt would leak a descriptor. Measured without this:
    +28 descriptors after 30 failing WireGuard reads.
    """

    class Closing(cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            try:
                super().__init__(*args, **kwargs)
            except BaseException:
                try:
                    self.close()
                except Exception:  # noqa: BLE001 - best effort; the original error matters
                    pass
                raise

    Closing.__name__ = Closing.__qualname__ = f"Closing{cls.__name__}"
    return Closing


def drop_strays(sock: Any) -> int:
    """Drop the messages a pyroute2 socket queued for no request; return how many.

    pyroute2 0.9 asks for an ACK with every ``get`` (``ipr.link("get")``,
    ``ipr.route("get")``), returns on the answer and forgets the request; the
    ACK that follows lands in the queue for unsolicited messages (tag 0),
    which nothing reads on a socket bound to no multicast group. Measured: one
    36-byte message per request kept, +4 KiB RSS per request (8,000 link reads:
    +28 MiB). The sockets here are bound to no group, so everything in that
    queue is such a stray. Runs on the socket's own thread (the queue is
    thread-local).
    """
    local = getattr(getattr(sock, "asyncore", None), "local", None)
    queues = getattr(getattr(local, "msg_queue", None), "queues", None)
    strays = queues.get(0) if isinstance(queues, dict) else None
    n = 0
    while strays is not None and not strays.empty():
        strays.get_nowait()
        n += 1
    return n


class _Generation:
    """A worker thread and the socket it owns; replaced wholesale after a hang."""

    def __init__(self, name: str) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.sock: Any = None
        self.ns_ident: tuple[int, int] | None = None  # the namespace the socket lives in

    def close_sock(self) -> None:  # runs on the worker thread
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except Exception:  # noqa: BLE001 - closing a broken socket may fail; nothing to do
                pass


class NetlinkThread:
    def __init__(
        self, factory: Callable[[], Any], *, netns: str | None, name: str, timeout: float = 5.0
    ) -> None:
        """``factory()`` opens the socket in ``netns``, on the worker thread."""
        self._factory = factory
        self.netns = netns
        self._name = name
        self.timeout = timeout
        self._lock = threading.Lock()
        self._gen: _Generation | None = None
        self.opened = 0  # how many sockets were opened (tests check it stays at 1)

    def call(self, fn: Callable[[Any], T], what: str) -> T:
        """Run ``fn(sock)`` on the worker thread and return its result.

        ``what`` names the operation in a timeout message. Exceptions from ``fn``
        are re-raised here unchanged.
        """
        ident = netns_ident(self.netns)
        with self._lock:
            if self._gen is None:
                self._gen = _Generation(self._name)
            gen = self._gen
        fut = gen.executor.submit(self._run, gen, fn, ident)
        try:
            return fut.result(timeout=self.timeout)
        except FutureTimeout:
            # Leave the stuck worker behind; the next call gets a fresh one.
            with self._lock:
                if self._gen is gen:
                    self._gen = None
            gen.executor.submit(gen.close_sock)
            gen.executor.shutdown(wait=False)
            raise SourceError(
                f"{what}: no answer from netlink within {self.timeout:g} s", kind="timeout"
            ) from None

    def _run(self, gen: _Generation, fn: Callable[[Any], T], ident: tuple[int, int] | None) -> T:
        if gen.sock is not None and gen.ns_ident != ident:
            gen.close_sock()  # the namespace was re-created under the same name
        if gen.sock is None:
            gen.sock = self._factory()
            gen.ns_ident = ident
            self.opened += 1
        try:
            return fn(gen.sock)
        except NetlinkError:
            raise  # the kernel answered: the socket is fine
        except BaseException:
            gen.close_sock()  # reopen on the next call
            raise
        finally:
            if gen.sock is not None:
                drop_strays(gen.sock)

    def close(self) -> None:
        with self._lock:
            gen, self._gen = self._gen, None
        if gen is not None:
            done = gen.executor.submit(gen.close_sock)
            gen.executor.shutdown(wait=False)
            try:  # wait for the close unless the worker is stuck in a call
                done.result(timeout=self.timeout)
            except FutureTimeout:
                pass
