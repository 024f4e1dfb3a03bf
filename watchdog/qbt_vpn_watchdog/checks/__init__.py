"""The checks: one module per check, the registry, the context and the runner.

A check is one small function ``fn(ctx: Context) -> Outcome`` in its own
module, registered with everything about it (registry.py): its failure
reasons and what each means to remediation, its own series, its display
order. A check answers "did it work" and adds its observations; expected
failures are returned as a failed ``Outcome``, never raised. The runner
(runner.py) owns what is shared: per-check timeouts, timing, and turning an
exception into reason ``error``. Checks read the world only through their
``Context`` (context.py).

To add a check: docs/architecture.md has the recipe (every file it touches).
``load_all`` finds the module, and refuses a check without its table in
``config.ChecksSection`` (``contract_errors``).
"""

from __future__ import annotations

from qbt_vpn_watchdog.checks.context import Context
from qbt_vpn_watchdog.checks.registry import (
    REGISTRY,
    CheckFn,
    CheckSpec,
    Reason,
    classify,
    contract_errors,
    degraded,
    load_all,
    names,
    ordered,
    reason_of,
    register,
    unknown,
    unsafe,
)
from qbt_vpn_watchdog.checks.runner import Runner

__all__ = [
    "REGISTRY", "CheckFn", "CheckSpec", "Context", "Reason", "Runner", "classify", "contract_errors",
    "degraded",
    "load_all", "names", "ordered", "reason_of", "register", "unknown", "unsafe",
]  # fmt: skip
