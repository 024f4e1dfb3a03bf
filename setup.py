"""Build hook: record the git revision in the package, for qbtvpn_build_info{revision}.

Everything else is in pyproject.toml. ``build_py`` writes qbt_vpn_watchdog/REVISION
from ``$QBTVPN_REVISION`` (the Nix package sets it from the flake's revision)
or, in a git checkout, from ``git rev-parse HEAD``; with neither, no file, and
the metric says "unknown" (qbt_vpn_watchdog/build.py).
"""

import os
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "-c", "safe.directory=*", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    rev = out.stdout.strip()
    return rev if out.returncode == 0 and len(rev) == 40 else ""


class BuildPyWithRevision(build_py):
    def run(self) -> None:
        super().run()
        rev = os.environ.get("QBTVPN_REVISION", "").strip() or _git_head()
        if rev and not self.editable_mode:  # an editable install asks git at run time
            target = Path(self.build_lib) / "qbt_vpn_watchdog" / "REVISION"
            target.write_text(rev + "\n", encoding="ascii")


setup(cmdclass={"build_py": BuildPyWithRevision})
