"""The package as an operator installs it: the documented install, run by the tests.

README "Install" and docs/systemd.md tell a host without NixOS to build the
wheel with ``python3 -m build`` and install it into a virtualenv under /opt
(Debian 12's pip refuses system-wide installs, PEP 668), which is where
systemd/qbt-vpn-watchdog.service's ExecStart points. ``install()`` performs
exactly ``STEPS``, with ``python3`` = the interpreter running the tests,
``dist/`` = a temporary folder and ``PREFIX`` moved under a world-readable
temporary folder (it stands in for /opt).

The same installation serves the tests that run the product as another user
(uid 65534): that user may not be able to read the checkout (a clone under
/root, mode 0700, or in a ``mktemp -d`` folder), while everything under the
install's folder is readable by all.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "qbt-vpn-watchdog.service"
PREFIX = "/opt/qbt-vpn-watchdog"
# The install, as README "Install" and docs/systemd.md give it (without `sudo`;
# tests/artefacts/test_install.py keeps both documents saying exactly these).
STEPS = (
    "python3 -m build",
    f"python3 -m venv {PREFIX}",
    f"{PREFIX}/bin/pip install dist/qbt_vpn_watchdog-*.whl",
    f"ln -sf {PREFIX}/bin/qbt-vpn-watchdog /usr/local/bin/qbt-vpn-watchdog",
)


@dataclass(frozen=True)
class Installed:
    root: Path  # the world-readable temporary folder; PREFIX lives under it
    wheel: Path

    def path(self, documented: str) -> Path:
        """Where a documented absolute path (/opt/qbt-vpn-watchdog/...) is in this install."""
        return self.root / documented.lstrip("/")

    @property
    def prefix(self) -> Path:
        return self.path(PREFIX)

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"

    @property
    def command(self) -> Path:
        return self.prefix / "bin" / "qbt-vpn-watchdog"

    @property
    def on_path(self) -> Path:
        """The link the install puts in /usr/local/bin."""
        return self.path("/usr/local/bin/qbt-vpn-watchdog")


def exec_start() -> list[str]:
    """The watchdog unit's ExecStart= as an argv."""
    for line in UNIT.read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise AssertionError(f"{UNIT}: no ExecStart=")


def readable_by_all(path: Path) -> bool:
    """Every folder above ``path`` searchable by others, and ``path`` itself usable by them."""
    path = Path(path).resolve()
    for p in (*reversed(path.parents), path):
        mode = os.stat(p).st_mode
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
    return bool(os.stat(path).st_mode & stat.S_IROTH)


def base_python() -> str:
    """An interpreter of this Python version that any user can run, for the new virtualenv.

    The tests' own may live where other users cannot go (pyenv under /root);
    Debian's /usr/bin/python3.X is the same version on a Debian host.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys._base_executable, f"/usr/bin/python{version}"):
        if Path(candidate).exists() and readable_by_all(Path(candidate)):
            return candidate
    return sys._base_executable


def _run(argv: list[str]) -> None:
    # Without PYTHONPATH: a checkout's package on it (and its egg-info) would
    # make pip take the wheel as installed already.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    if p.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(argv)} exited {p.returncode}:\n{p.stdout[-3000:]}{p.stderr[-3000:]}"
        )


def install(parent: str | None = None) -> Installed:
    """Build the wheel from this checkout and install it as documented, under a new folder."""
    # mkdtemp makes it 0700; the point is that everyone may read it (as /opt).
    root = Path(tempfile.mkdtemp(prefix="qbtvpn-install-", dir=parent or "/tmp"))
    root.chmod(0o755)
    try:
        dist = root / "dist"
        build, venv, pip, link = (shlex.split(s) for s in STEPS)
        assert build[:3] == ["python3", "-m", "build"] and venv[:3] == ["python3", "-m", "venv"]
        # `python -m build` builds the sdist, then the wheel from it (nothing is
        # written into the checkout but the egg-info that .gitignore names).
        _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)])
        _run([base_python(), "-m", "venv", str(root / venv[3].lstrip("/"))])
        wheels = glob.glob(str(dist / Path(pip[-1]).name))
        assert len(wheels) == 1, wheels
        pip_argv = [str(root / pip[0].lstrip("/")), *pip[1:-1], wheels[0]]
        _run([*pip_argv, "-q", "--disable-pip-version-check"])
        on_path = root / link[-1].lstrip("/")
        on_path.parent.mkdir(parents=True)
        on_path.symlink_to(root / link[-2].lstrip("/"))
        done = Installed(root, Path(wheels[0]))
        assert done.command.is_file(), f"{done.command}: not installed"
        return done
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


@pytest.fixture(scope="session")
def installed():
    """The documented install, made once per session; removed at the end."""
    done = install()
    try:
        yield done
    finally:
        shutil.rmtree(done.root, ignore_errors=True)
