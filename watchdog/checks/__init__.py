"""The check registry and the runner.

A check is one small function ``fn(ctx: Context) -> Outcome``, registered in
``REGISTRY`` with its fixed set of failure reasons. A check answers "did it
work" and adds its observations; expected failures are returned as a failed
``Outcome``, never raised. The runner owns what is shared: per-check timeouts,
intervals, timing, and turning an exception into reason ``error``.

Checks read the world only through ``ctx``, whose readers are memoized per
cycle: two checks that need the WireGuard peer state cause one read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from watchdog.results import COMMON_REASONS, ERROR, OK, TIMEOUT, CheckResult, Outcome
from watchdog.sources import Sources

if TYPE_CHECKING:
    from watchdog.config import Config
    from watchdog.sources import DnsAnswer, HttpResponse, LinkState, Listener, QbtState, WgDevice

log = logging.getLogger(__name__)


class _Memo:
    """Call a reader at most once per cycle, also across threads; re-raise its error."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._lock = threading.Lock()
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def __call__(self) -> Any:
        with self._lock:
            if not self._done:
                try:
                    self._value = self._fn()
                except BaseException as e:  # noqa: BLE001 - re-raised to every caller
                    self._error = e
                self._done = True
        if self._error is not None:
            raise self._error
        return self._value


@dataclass
class Context:
    """What a check sees: the config, this cycle's memoized readers, its own history."""

    config: Config
    sources: Sources
    history: Sequence[CheckResult] = ()  # this check's earlier results, oldest first
    now: Callable[[], float] = time.time
    _memo: dict[str, _Memo] = field(default_factory=dict)

    def _once(self, key: str, fn: Callable[[], Any]) -> Any:
        m = self._memo.get(key)
        if m is None:
            m = self._memo.setdefault(key, _Memo(fn))
        return m()

    def wireguard(self, fresh: bool = False) -> WgDevice:
        """The tunnel's WireGuard device; ``fresh``: read again, past this cycle's memo."""
        if fresh:
            return self.sources.wireguard.read()
        return self._once("wireguard", self.sources.wireguard.read)

    def tunnel_link(self, fresh: bool = False) -> LinkState | None:
        """The tunnel interface in the namespace (None: it does not exist)."""
        ifname = self.config.wireguard.interface
        if fresh:
            return self.sources.links.link(ifname)
        return self._once("tunnel_link", lambda: self.sources.links.link(ifname))

    def qbittorrent(self) -> QbtState:
        return self._once("qbittorrent", self.sources.qbittorrent.state)

    def resolver(self) -> str | None:
        """The VPN's resolver (``sources.dns.vpn_resolver``: the one rule for picking it)."""
        from watchdog.sources.dns import vpn_resolver

        return self._once("resolver", lambda: vpn_resolver(self.config, self.sources.dns))

    def route_interface(self, dst: str) -> str | None:
        """The interface the namespace's route to ``dst`` leaves by (None: no route)."""
        return self._once(f"route:{dst}", lambda: self.sources.links.route_interface(dst))

    def tcp_listeners(self, port: int) -> tuple[Listener, ...]:
        """The TCP sockets listening on ``port`` in the namespace, with their bound device."""
        return self._once(f"listen:{port}", lambda: self.sources.links.tcp_listeners(port))

    def _source_memos(self) -> list[tuple[str, _Memo]]:
        # Route and listener look-ups are per argument and not part of the snapshot.
        return [
            (k, m) for k, m in list(self._memo.items()) if not k.startswith(("route:", "listen:"))
        ]

    def readings(self) -> dict[str, Any]:
        """The readers' values this cycle that succeeded (for the metrics snapshot)."""
        return {k: m._value for k, m in self._source_memos() if m._done and m._error is None}

    def reading_errors(self) -> dict[str, str]:
        """The readers asked for this cycle that failed, or never answered, with why."""
        return {
            k: (str(m._error) if m._done else "no answer in time")
            for k, m in self._source_memos()
            if not m._done or m._error is not None
        }

    def for_check(self, history: Sequence[CheckResult]) -> Context:
        """The same cycle (shared memo) with another check's history."""
        return Context(self.config, self.sources, history, self.now, self._memo)

    # DNS and HTTP are not memoized: each query is its own probe.
    def dns_query(self, name: str, server: str, timeout: float) -> DnsAnswer:
        return self.sources.dns.query(name, server, timeout)

    def http_get(self, url: str, timeout: float, max_bytes: int) -> HttpResponse:
        return self.sources.http.get(url, timeout, max_bytes)

    def webui_probe(self, url: str, timeout: float) -> HttpResponse:
        """An unauthenticated GET of qBittorrent's app/version at ``url`` (no login)."""
        return self.sources.qbittorrent.webui_probe(url, timeout)


CheckFn = Callable[[Context], Outcome]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    fn: CheckFn
    reasons: tuple[str, ...]  # failure reasons this check may return (besides error/timeout)
    summary: str  # one line for `check` output and docs

    @property
    def all_reasons(self) -> tuple[str, ...]:
        return (OK, *self.reasons, *COMMON_REASONS)


REGISTRY: dict[str, CheckSpec] = {}


def register(name: str, reasons: Sequence[str], summary: str) -> Callable[[CheckFn], CheckFn]:
    def deco(fn: CheckFn) -> CheckFn:
        if name in REGISTRY:
            raise RuntimeError(f"check {name!r} registered twice")
        REGISTRY[name] = CheckSpec(name, fn, tuple(reasons), summary)
        return fn

    return deco


def load_all() -> dict[str, CheckSpec]:
    """Import every check module (each registers itself) and return the registry."""
    from watchdog.checks import bind, dns, exit_ip, handshake, return_path, webui  # noqa: F401

    return REGISTRY


# The order checks are shown in and run in.
ORDER = ("handshake", "return_path", "dns", "exit_ip", "bind", "webui")


class Runner:
    """Runs the due checks of a cycle concurrently, each within its own timeout.

    A check that overruns its timeout gets a ``timeout`` result; its thread is
    left to finish on its own (Python threads cannot be killed) and the check
    is not started again until it has, so a hung probe never piles up threads.
    """

    def __init__(
        self, specs: Mapping[str, CheckSpec], clock: Callable[[], float] = time.time
    ) -> None:
        self.specs = dict(specs)
        self.clock = clock
        self._busy: dict[str, Future] = {}
        self._lock = threading.Lock()

    def run_cycle(
        self,
        ctx: Context,
        timeouts: Mapping[str, float],
        histories: Mapping[str, Sequence[CheckResult]],
    ) -> dict[str, CheckResult]:
        started = self.clock()
        futures: dict[str, tuple[Future, float, float]] = {}
        results: dict[str, CheckResult] = {}
        for name, timeout in timeouts.items():
            spec = self.specs[name]
            with self._lock:
                prev = self._busy.get(name)
                if prev is not None and not prev.done():
                    results[name] = CheckResult(
                        name,
                        False,
                        TIMEOUT,
                        "still running from an earlier cycle (hung?)",
                        {},
                        {},
                        started,
                        0.0,
                    )
                    continue
            fut: Future = Future()
            t0 = time.monotonic()
            sub = ctx.for_check(histories.get(name, ()))
            th = threading.Thread(
                target=_run_one, args=(spec, sub, fut), name=f"check-{name}", daemon=True
            )
            with self._lock:
                self._busy[name] = fut
            th.start()
            futures[name] = (fut, t0, timeout)
        for name, (fut, t0, timeout) in futures.items():
            remaining = max(0.0, t0 + timeout - time.monotonic())
            try:
                outcome: Outcome = fut.result(timeout=remaining)
            except TimeoutError:
                outcome = Outcome.failed(TIMEOUT, f"no answer within {timeout:g} s")
                duration = timeout
            else:
                duration = time.monotonic() - t0
            results[name] = CheckResult.from_outcome(name, outcome, started, duration)
        return {n: results[n] for n in timeouts if n in results}


def _run_one(spec: CheckSpec, ctx: Context, fut: Future) -> None:
    try:
        outcome = spec.fn(ctx)
        if not isinstance(outcome, Outcome):
            raise TypeError(f"check returned {type(outcome).__name__}, not Outcome")
        if (
            not outcome.ok
            and outcome.reason not in spec.reasons
            and outcome.reason not in COMMON_REASONS
        ):
            raise ValueError(f"reason {outcome.reason!r} is not one of {spec.reasons}")
    except Exception as e:  # noqa: BLE001 - the runner's job is to keep going
        log.debug("check %s raised", spec.name, exc_info=True)
        outcome = Outcome.failed(ERROR, f"{type(e).__name__}: {e}")
    fut.set_result(outcome)
