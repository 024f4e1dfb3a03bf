"""What a check is: its function, its reasons with what each one means, its series.

A check's file declares everything about it in one ``@register(...)``: the
reasons it can fail with and how remediation counts each one (``Reason``), how
its own error or timeout counts, whether a link event runs it, and the series
it exports beyond the common ``qbtvpn_check_*`` ones. Everything else is
derived from the registry: the display order, the metric catalogue, the
policy's classification (``classify``), the link-event checks, the README's
tables (kept true by tests).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qbt_vpn_watchdog.results import (
    COMMON_REASONS,
    DEGRADED,
    ERROR,
    OK,
    SAFE,
    SEVERITIES,
    TIMEOUT,
    UNKNOWN,
    UNSAFE,
    CheckResult,
    Outcome,
)

if TYPE_CHECKING:
    from qbt_vpn_watchdog.checks.context import Context
    from qbt_vpn_watchdog.series import Metric

CheckFn = Callable[["Context"], Outcome]
# A check's own series from its latest result (None: it has not run yet):
# prometheus_client families, one per Metric in ``series``, in that order.
RenderFn = Callable[[CheckResult | None], Iterable[Any]]


@dataclass(frozen=True)
class Reason:
    """A failure reason and what it means to remediation.

    severity: UNSAFE (torrent traffic may leak or go nowhere: acted on),
    UNKNOWN (the watchdog cannot tell: never starts a hold, blocks resuming
    one) or DEGRADED (reported only). ``restart``: a tunnel restart is the
    remedy. ``rebind``: setting qBittorrent's interface and port again is.
    ``ours_only``: the restart is the remedy only where this project's
    vpn-netns.sh builds the namespace (``namespace.built_by_vpn_netns``): its
    restart-tunnel re-installs the kill switch and turns IPv6 off; on a
    namespace someone else's module built, a restart changes nothing, so the
    torrents are only held.
    """

    name: str
    severity: str
    restart: bool = False
    rebind: bool = False
    ours_only: bool = False

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES or self.severity == SAFE:
            raise ValueError(f"reason {self.name!r}: severity {self.severity!r} is not a failure")


def unsafe(
    name: str, *, restart: bool = False, rebind: bool = False, ours_only: bool = False
) -> Reason:
    return Reason(name, UNSAFE, restart, rebind, ours_only)


def degraded(name: str, *, rebind: bool = False) -> Reason:
    return Reason(name, DEGRADED, rebind=rebind)


def unknown(name: str) -> Reason:
    return Reason(name, UNKNOWN)


@dataclass(frozen=True)
class CheckSpec:
    name: str
    fn: CheckFn
    reasons: tuple[Reason, ...]  # the failures it may return (besides error/timeout)
    summary: str  # one line for `check` output and docs
    order: int = 1000  # display and run order: lower first
    errors: str = UNKNOWN  # how its own error/timeout counts (UNSAFE: fail closed)
    restart_on_error: bool = False  # and whether a tunnel restart is the remedy for those
    on_link_event: bool = False  # run at once when the tunnel link changes
    series: tuple[Metric, ...] = ()  # its own series, beyond qbtvpn_check_*
    render: RenderFn | None = None  # fills ``series`` from the latest result
    _by_name: Mapping[str, Reason] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [r.name for r in self.reasons]
        clash = {OK, *COMMON_REASONS} & set(names)
        if clash or len(set(names)) != len(names):
            raise ValueError(f"check {self.name!r}: reasons repeat or reuse {sorted(clash)}")
        if (self.render is None) != (not self.series):
            raise ValueError(f"check {self.name!r}: series and render go together")
        errors = Reason(ERROR, self.errors, restart=self.restart_on_error)
        by_name = {r.name: r for r in self.reasons}
        by_name[ERROR] = errors
        by_name[TIMEOUT] = Reason(TIMEOUT, self.errors, restart=self.restart_on_error)
        object.__setattr__(self, "_by_name", by_name)

    @property
    def reason_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.reasons)

    @property
    def all_reasons(self) -> tuple[str, ...]:
        """Every value of its ``reason`` label: ok, its failures, error and timeout."""
        return (OK, *self.reason_names, *COMMON_REASONS)

    def reason(self, name: str) -> Reason:
        """What ``name`` means; an unknown reason counts as unsafe (fail closed)."""
        return self._by_name.get(name) or Reason(name, UNSAFE)


REGISTRY: dict[str, CheckSpec] = {}


def register(
    name: str,
    *,
    reasons: Sequence[Reason],
    summary: str,
    order: int,
    errors: str = UNKNOWN,
    restart_on_error: bool = False,
    on_link_event: bool = False,
    series: Sequence[Metric] = (),
    render: RenderFn | None = None,
) -> Callable[[CheckFn], CheckFn]:
    """Add the decorated function to the registry as check ``name`` (see ``CheckSpec``)."""

    def deco(fn: CheckFn) -> CheckFn:
        if name in REGISTRY:
            raise RuntimeError(f"check {name!r} registered twice")
        REGISTRY[name] = CheckSpec(
            name, fn, tuple(reasons), summary, order, errors, restart_on_error, on_link_event,
            tuple(series), render,
        )  # fmt: skip
        return fn

    return deco


_NOT_CHECKS = frozenset({"registry", "context", "runner"})
_loaded = False


def load_all() -> dict[str, CheckSpec]:
    """Import every check module in this package (each registers itself); the registry,
    in display order."""
    global _loaded
    if _loaded:
        return REGISTRY
    import qbt_vpn_watchdog.checks as pkg

    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name not in _NOT_CHECKS:
            importlib.import_module(f"qbt_vpn_watchdog.checks.{m.name}")
    ordered = sorted(REGISTRY.values(), key=lambda s: (s.order, s.name))
    if list(REGISTRY) != [s.name for s in ordered]:
        items = [(s.name, s) for s in ordered]
        REGISTRY.clear()
        REGISTRY.update(items)
    _loaded = True
    return REGISTRY


def names() -> tuple[str, ...]:
    """Every check, in display order."""
    return tuple(load_all())


def ordered(specs: Mapping[str, CheckSpec], wanted: Iterable[str]) -> list[str]:
    """``wanted`` names that are in ``specs``, in the specs' display order."""
    want = set(wanted)
    return [
        s.name for s in sorted(specs.values(), key=lambda s: (s.order, s.name)) if s.name in want
    ]


def classify(check: str, reason: str) -> str:
    """SAFE, DEGRADED, UNKNOWN or UNSAFE for one result: a look-up in the check's spec.

    Fails closed: a reason the check did not declare, or a check that is not
    registered, counts as UNSAFE.
    """
    if reason == OK:
        return SAFE
    spec = load_all().get(check)
    return UNSAFE if spec is None else spec.reason(reason).severity


def reason_of(check: str, reason: str) -> Reason:
    """The declared meaning of ``reason`` for ``check`` (unsafe when unknown)."""
    spec = load_all().get(check)
    return spec.reason(reason) if spec is not None else Reason(reason, UNSAFE)


__all__ = [
    "DEGRADED", "SAFE", "UNKNOWN", "UNSAFE", "CheckFn", "CheckSpec", "REGISTRY", "Reason",
    "RenderFn", "classify", "degraded", "load_all", "names", "ordered", "reason_of", "register",
    "unknown", "unsafe",
]  # fmt: skip
