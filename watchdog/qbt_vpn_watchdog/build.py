"""The git revision this copy was built from, for ``qbtvpn_build_info{revision}``.

Recorded at build time in the package file ``REVISION`` (setup.py's build_py
writes it from ``$QBTVPN_REVISION``, which the Nix package sets from the
flake, or from ``git rev-parse HEAD`` when built from a checkout). An editable
install of a checkout reads ``git`` once instead. "unknown" when neither says.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

UNKNOWN = "unknown"


@functools.cache
def revision() -> str:
    here = Path(__file__).resolve().parent
    try:
        recorded = (here / "REVISION").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        recorded = ""
    if recorded:
        return recorded
    return _git(here) or UNKNOWN


def _git(where: Path) -> str:
    """HEAD of the checkout this package's sources are in (an editable install), or ""."""
    if not any((p / ".git").exists() for p in (where, *where.parents)):
        return ""
    try:
        out = subprocess.run(
            ["git", "-c", "safe.directory=*", "rev-parse", "HEAD"],
            cwd=where, capture_output=True, text=True, timeout=2, check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    rev = out.stdout.strip()
    return rev if out.returncode == 0 and len(rev) == 40 else ""
