"""What a check is: its function, its reasons with what each one means, its series.

A check's file declares everything about it in one ``@register(...)``: the
reasons it can fail with and how remediation counts each one (``Reason``), how
its own error or timeout counts, whether a link event runs it, and the series
it exports beyond the common ``qbtvpn_check_*`` ones. Everything else is
derived from the registry: the display order, the metric catalogue, the
policy's reason table (``CheckSpec.reason_table``, handed to it by the daemon),
the link-event checks, the README's tables (kept true by tests).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from qbt_vpn_watchdog.config.schema import ChecksSection
from qbt_vpn_watchdog.results import (
    COMMON_REASONS,
    DEGRADED,
    ERROR,
    LOCAL_RESOURCE,
    OK,
    SAFE,
    TIMEOUT,
    UNKNOWN,
    UNSAFE,
    CheckResult,
    Outcome,
    Reason,
)

if TYPE_CHECKING:
    from qbt_vpn_watchdog.checks.context import Context
    from qbt_vpn_watchdog.series import Metric

CheckFn = Callable[["Context"], Outcome]
# A check's own series from its latest result (None: it has not run yet):
# prometheus_client families, one per Metric in ``series``, in that order.
RenderFn = Callable[[CheckResult | None], Iterable[Any]]


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
    # Seconds a provisional result needs before running the check again can settle
    # it (return_path: its counters' window); a one-shot `check` waits this long.
    settle_after: float = 0.0
    # How its timeout counts, when not as its errors: bind's reads wait on qBittorrent's
    # WebUI, and a hung WebUI is no tunnel fault (UNKNOWN), while its own error stays unsafe.
    timeouts: str | None = None
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
        if self.timeouts is None:
            by_name[TIMEOUT] = Reason(TIMEOUT, self.errors, restart=self.restart_on_error)
        else:
            by_name[TIMEOUT] = Reason(TIMEOUT, self.timeouts)
        # Never unsafe, even for a check that fails closed: nothing was read.
        by_name[LOCAL_RESOURCE] = Reason(LOCAL_RESOURCE, UNKNOWN)
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

    @property
    def reason_table(self) -> Mapping[str, Reason]:
        """Every failure it may report (error and timeout too) -> what it means: the
        policy's table (``policy.Settings.from_config``)."""
        return MappingProxyType(self._by_name)


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
    settle_after: float = 0.0,
    timeouts: str | None = None,
) -> Callable[[CheckFn], CheckFn]:
    """Add the decorated function to the registry as check ``name`` (see ``CheckSpec``)."""

    def deco(fn: CheckFn) -> CheckFn:
        if name in REGISTRY:
            raise RuntimeError(f"check {name!r} registered twice")
        REGISTRY[name] = CheckSpec(
            name, fn, tuple(reasons), summary, order, errors, restart_on_error, on_link_event,
            tuple(series), render, settle_after, timeouts,
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
    # The modules beside this one, found on disk: importing the package itself
    # from here would be an import circle (checks/__init__ imports this module).
    for m in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if m.name not in _NOT_CHECKS:
            importlib.import_module(f"{__package__}.{m.name}")
    errors = contract_errors(REGISTRY)
    if errors:
        raise RuntimeError("the checks and config.ChecksSection disagree: " + "; ".join(errors))
    ordered = sorted(REGISTRY.values(), key=lambda s: (s.order, s.name))
    if list(REGISTRY) != [s.name for s in ordered]:
        items = [(s.name, s) for s in ordered]
        REGISTRY.clear()
        REGISTRY.update(items)
    _loaded = True
    return REGISTRY


def contract_errors(specs: Mapping[str, CheckSpec]) -> list[str]:
    """Where the registered checks and the config's [checks.*] tables disagree.

    A check registered without a section in ``config.ChecksSection`` would never
    run (nothing enables it), and a section without a check would configure
    nothing: both are caught when the checks load, not left silent.
    """
    sections = {f.name: f.type for f in dataclasses.fields(ChecksSection)}
    errors = [
        f"check {n!r} is registered but ChecksSection has no {n!r} table"
        for n in specs
        if n not in sections
    ]
    errors += [
        f"ChecksSection.{n} configures no registered check" for n in sections if n not in specs
    ]
    return errors


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
    "RenderFn", "classify", "contract_errors", "degraded", "load_all", "names", "ordered", "reason_of", "register",
    "unknown", "unsafe",
]  # fmt: skip
