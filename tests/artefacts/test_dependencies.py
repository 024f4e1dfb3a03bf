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


def _names(deps: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}


def _declared() -> set[str]:
    """The runtime dependencies and the optional `web` extra (web.config_file only)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return _names(project["dependencies"]) | _names(project["optional-dependencies"]["web"])


def test_the_web_extra_is_imported_only_where_a_web_config_file_is_read():
    """bcrypt and PyYAML are optional: imported lazily, so the daemon starts without them."""
    for path in (ROOT / "watchdog").rglob("*.py"):
        for node in ast.parse(path.read_text(), str(path)).body:  # module level only
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                assert not {"bcrypt", "yaml"} & {n.split(".")[0] for n in names}, path


def test_every_imported_package_is_declared_and_every_declared_one_used():
    dists = packages_distributions()
    imported = set()
    for top in _imported_top_levels():
        assert top in dists, f"{top} is imported but no installed distribution provides it"
        imported |= {d.lower().replace("_", "-") for d in dists[top]}
    declared = _declared()
    assert imported - declared == set(), f"imported, not declared: {sorted(imported - declared)}"
    assert declared - imported == set(), f"declared, never imported: {sorted(declared - imported)}"
