"""The suite passes wherever the checkout lives (issue #26).

A clone under /root (mode 0700 on Debian) or in a ``mktemp -d`` folder is not
readable by other users. The tests that run the product as uid 65534 use the
documented install in a world-readable folder (tests/support/installed.py),
never the checkout; this test runs one of them from a copy of the checkout in
a fresh ``mktemp -d`` folder, as CI would from such a clone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNPRIVILEGED = "tests/core/test_cli.py::test_without_privileges_every_command_says_what_it_needs"


def _files() -> list[str]:
    """The checkout's files as a clone has them (tracked, plus new ones not ignored)."""
    p = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if p.returncode != 0 or not shutil.which("git"):
        pytest.skip(f"not a git checkout: {p.stderr.strip()}")
    return [f for f in p.stdout.split("\0") if f and (ROOT / f).is_file()]


def _nobody(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root, setpriv")
def test_the_unprivileged_tests_pass_from_a_clone_in_a_0700_folder():
    folder = Path(tempfile.mkdtemp(prefix="qbtvpn-clone-"))
    try:
        assert folder.stat().st_mode & 0o777 == 0o700
        clone = folder / "qbt-vpn-watchdog"
        for f in _files():
            (clone / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, clone / f)
        # The premise: uid 65534 cannot read this checkout.
        assert _nobody("cat", str(clone / "pyproject.toml")).returncode != 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        # The clone's own package, not the one this interpreter has installed.
        env["PYTHONPATH"] = str(clone / "watchdog")
        p = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", UNPRIVILEGED],
            cwd=clone, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
        assert "2 passed" in p.stdout, p.stdout[-2000:]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
