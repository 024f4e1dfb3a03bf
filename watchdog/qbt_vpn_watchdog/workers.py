"""Calls bounded in time: each in a worker thread of its own, given up on after a timeout.

Python threads cannot be killed: a call that overran is left to finish on its
own, and the same name is refused (``Busy``) until it has, so a hung call never
piles up threads. The runner runs each check this way, the remediator each
action.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class Busy(Exception):
    """The previous call under this name has not finished (hung?)."""


class Workers:
    """At most one running call per name, each in a daemon thread named ``<prefix>-<name>``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._busy: dict[str, Future] = {}
        self._lock = threading.Lock()

    def start(self, name: str, fn: Callable[[], Any]) -> Future:
        """Start ``fn`` in its own thread; its future holds the result or what it raised."""
        with self._lock:
            prev = self._busy.get(name)
            if prev is not None and not prev.done():
                raise Busy(name)
            fut: Future = Future()
            self._busy[name] = fut

        def work() -> None:
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                fut.set_exception(e)

        threading.Thread(target=work, name=f"{self.prefix}-{name}", daemon=True).start()
        return fut

    def call(self, name: str, fn: Callable[[], Any], timeout: float) -> Any:
        """``fn()`` within ``timeout`` s: its result, what it raised, ``Busy`` or ``TimeoutError``."""
        return self.start(name, fn).result(timeout=timeout)
