"""Every package the watchdog imports is declared in pyproject.toml, and nothing else is."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported_top_levels() -> set[str]:
    names = set()
    for path in (ROOT / "watchdog").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"qbt_vpn_watchdog"}


def _declared() -> set[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}


def test_every_imported_package_is_declared_and_every_declared_one_used():
    dists = packages_distributions()
    imported = set()
    for top in _imported_top_levels():
        assert top in dists, f"{top} is imported but no installed distribution provides it"
        imported |= {d.lower().replace("_", "-") for d in dists[top]}
    declared = _declared()
    assert imported - declared == set(), f"imported, not declared: {sorted(imported - declared)}"
    assert declared - imported == set(), f"declared, never imported: {sorted(declared - imported)}"
