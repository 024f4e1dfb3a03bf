"""What a check sees: the config, this cycle's memoized readers, its own history.

Checks read the world only through their ``Context``. Readers are memoized per
cycle, also across the checks' threads: two checks that need the WireGuard
peer state cause one read. DNS queries and HTTP GETs are not memoized: each
is its own probe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qbt_vpn_watchdog.results import CheckResult
from qbt_vpn_watchdog.sources import SourceError, Sources, local_resource

if TYPE_CHECKING:
    from qbt_vpn_watchdog.config import Config
    from qbt_vpn_watchdog.sources import (
        DnsAnswer,
        HttpResponse,
        KillSwitchReading,
        LinkState,
        Listener,
        PathMtu,
        QbtState,
        Route,
        TcpAnswer,
        WgDevice,
    )


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
    # The exit address the exit_ip check saw last ("" = none yet): port_forward's
    # target. Handed in by the loop; checks never read each other's results.
    exit_ip: str = ""
    # What ran out (open files, memory...) in a reading this check made; the
    # runner makes a failure of the check ``local_resource`` when it is set.
    local_resource: str | None = None
    # A clock no one steps, for ages a check follows across cycles (``now`` is the
    # wall clock: WireGuard's timestamps are on it, and NTP may step it).
    monotonic: Callable[[], float] = time.monotonic

    def _read(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except BaseException as e:
            ran_out = local_resource(e)
            if ran_out is not None and self.local_resource is None:
                self.local_resource = ran_out
            raise

    def _once(self, key: str, fn: Callable[[], Any]) -> Any:
        m = self._memo.get(key)
        if m is None:
            m = self._memo.setdefault(key, _Memo(fn))
        return self._read(m)

    def wireguard(self, fresh: bool = False) -> WgDevice:
        """The tunnel's WireGuard device; ``fresh``: read again, past this cycle's memo."""
        if fresh:
            return self._read(self.sources.wireguard.read)
        return self._once("wireguard", self.sources.wireguard.read)

    def tunnel_link(self, fresh: bool = False) -> LinkState | None:
        """The tunnel interface in the namespace (None: it does not exist)."""
        ifname = self.config.wireguard.interface
        if fresh:
            return self._read(lambda: self.sources.links.link(ifname))
        return self._once("tunnel_link", lambda: self.sources.links.link(ifname))

    def qbittorrent(self) -> QbtState:
        return self._once("qbittorrent", self.sources.qbittorrent.state)

    def resolver(self) -> str | None:
        """The VPN's resolver (``sources.dns.vpn_resolver``: the one rule for picking it)."""
        from qbt_vpn_watchdog.sources.dns import vpn_resolver

        return self._once("resolver", lambda: vpn_resolver(self.config, self.sources.dns))

    def route_interface(self, dst: str) -> str | None:
        """The interface the namespace's route to ``dst`` leaves by (None: no route)."""
        return self._once(f"route:{dst}", lambda: self.sources.links.route_interface(dst))

    def tcp_listeners(self, port: int) -> tuple[Listener, ...]:
        """The TCP sockets listening on ``port`` in the namespace, with their bound device."""
        return self._once(f"listen:{port}", lambda: self.sources.links.tcp_listeners(port))

    def routes(self, family: int) -> tuple[Route, ...]:
        """Every unicast route of ``family`` in the namespace, with its output interface."""
        return self._once(f"routes:{family}", lambda: self.sources.links.routes(family))

    def killswitch(self) -> KillSwitchReading:
        """This cycle's kill-switch probes (one set, shared by killswitch and ipv6)."""
        prober = self.sources.killswitch
        if prober is None:
            raise SourceError("no kill-switch prober in this setup", kind="local")
        skip = (self.config.wireguard.interface,)
        return self._once("killswitch", lambda: prober.probe(skip))

    def _source_memos(self) -> list[tuple[str, _Memo]]:
        # Route and listener look-ups are per argument and not part of the snapshot.
        per_argument = ("route:", "routes:", "listen:", "killswitch")
        return [(k, m) for k, m in list(self._memo.items()) if not k.startswith(per_argument)]

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
        return Context(
            self.config, self.sources, history, self.now, self._memo, self.exit_ip,
            monotonic=self.monotonic,
        )  # fmt: skip

    # DNS and HTTP are not memoized: each query is its own probe.
    def dns_query(
        self, name: str, server: str, timeout: float, retransmit_after: float | None = None
    ) -> DnsAnswer:
        """One query; with ``retransmit_after``, sent once more when unanswered by then."""
        if retransmit_after is None:
            return self._read(lambda: self.sources.dns.query(name, server, timeout))
        return self._read(
            lambda: self.sources.dns.query(name, server, timeout, retransmit_after=retransmit_after)
        )

    def path_mtu(
        self, target: str, mtu: int, budget: float, thorough: bool = True
    ) -> PathMtu | None:
        """Do packets of ``mtu`` bytes cross the tunnel to ``target`` and back (None: no prober)."""
        prober = self.sources.pmtu
        if prober is None:
            return None
        return self._read(lambda: prober.measure(target, mtu, budget, thorough))

    def http_get(self, url: str, timeout: float, max_bytes: int) -> HttpResponse:
        return self._read(lambda: self.sources.http.get(url, timeout, max_bytes))

    def tcp_connect(self, netns: str | None, host: str, port: int, timeout: float) -> TcpAnswer:
        """One TCP connect from ``netns`` (None: the watchdog's own namespace)."""
        prober = self.sources.tcp
        if prober is None:
            raise SourceError("no TCP prober in this setup", kind="local")
        return self._read(lambda: prober.connect(netns, host, port, timeout))

    def webui_probe(self, url: str, timeout: float) -> HttpResponse:
        """An unauthenticated GET of qBittorrent's app/version at ``url`` (no login)."""
        return self._read(lambda: self.sources.qbittorrent.webui_probe(url, timeout))
