"""The import package is qbt_vpn_watchdog: PyPI's `watchdog` (filesystem events)
owns the name `watchdog`, and an environment that holds both must run both."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pypi_watchdog_and_this_package_import_side_by_side(tmp_path):
    # Outside the repository, so the source root watchdog/ is not on sys.path:
    # what is imported is what is installed. The test extras install PyPI's watchdog.
    code = (
        "import pathlib, watchdog.observers, qbt_vpn_watchdog.cli, qbt_vpn_watchdog.checks\n"
        "assert 'site-packages' in watchdog.__file__, watchdog.__file__\n"
        "here = pathlib.Path(qbt_vpn_watchdog.__file__).parent\n"
        "assert (here.parent.name, here.name) == ('watchdog', 'qbt_vpn_watchdog'), here\n"
        "print('ok')\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_nothing_imports_the_bare_name_watchdog():
    # Inside this repository `import watchdog` would load the source folder a
    # second time under another name; everywhere else it is PyPI's package.
    found = []
    for folder in ("watchdog", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                found += [f"{path}:{node.lineno}" for n in names if n.split(".")[0] == "watchdog"]
    assert not found, found
