"""One pytest session in the kernel VM, as the host tests run it.

    with guest_session(["tests/vm/guest"], timeout=300, expect=names) as (r, cases):
        print((r.job / "rss.json").read_text())

boots the VM (tests/vm/runner.py; ``mode="systemd"`` and the rest of
``Vm.run``'s arguments pass through), runs pytest over ``paths`` in the guest
and fails with the guest's own text for every guest test that did not pass,
for each name in ``expect`` that never ran, and on a timeout or a non-zero
exit. Skips, naming what is missing, when the VM is not set up. The job
directory (what the guest wrote) is there inside the ``with`` and removed
after it. ``QVW_GUEST_PYTEST_ARGS`` adds arguments to the guest's pytest
(``-k`` picks a part: then the guest tests that did not run are not counted)
and prints its log.
"""

from __future__ import annotations

import ast
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.vm.runner import Vm, VmResult

REPO = Path(__file__).resolve().parents[2]


def defined_tests(folder: Path) -> set[str]:
    """The test functions defined in the test files of ``folder``."""
    names = set()
    for f in folder.glob("test_*.py"):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def guest_command(paths: list[str]) -> str:
    # -p no:cacheprovider: the guest's writes land in a tmpfs anyway. The log goes to
    # the job directory; its tail to the console, which a failure message quotes.
    return (
        f"cd {REPO} && {sys.executable} -m pytest -q -p no:cacheprovider -rA"
        f" --junitxml=/run/qvw-job/junit.xml {' '.join(paths)}"
        f" {os.environ.get('QVW_GUEST_PYTEST_ARGS', '')} > /run/qvw-job/guest.log 2>&1;"
        " code=$?; tail -c 20000 /run/qvw-job/guest.log; exit $code"
    )


def junit_cases(path: Path) -> dict[str, tuple[str, str]]:
    """test name -> (outcome, text): passed, failed, error or skipped."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        print(f"  in the VM: {case.get('name')} {float(case.get('time', 0)):.1f} s")
        outcome, text = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                text = (child.get("message") or "") + "\n" + (child.text or "")
                break
        out[case.get("name")] = (outcome, text)
    return out


def check(r: VmResult, timeout: float, expect: set[str]) -> dict[str, tuple[str, str]]:
    tail = r.console[-8000:]
    assert not r.timed_out, f"the VM session took over {timeout:g} s:\n{tail}"
    junit = r.job / "junit.xml"
    assert junit.exists(), f"the guest wrote no results (exit {r.exit_code}):\n{tail}"
    cases = junit_cases(junit)
    bad = {n: v for n, v in cases.items() if v[0] != "passed"}
    assert not bad, "in the VM:\n" + "\n".join(f"{n}: {o}\n{t}" for n, (o, t) in bad.items())
    ran = {n.split("[")[0] for n in cases}
    if not os.environ.get("QVW_GUEST_PYTEST_ARGS"):  # else a part, picked by hand (-k)
        assert expect <= ran, f"never ran in the VM: {sorted(expect - ran)}"
    assert r.exit_code == 0, f"guest pytest exited {r.exit_code}:\n{tail}"
    return cases


@contextmanager
def guest_session(
    paths: list[str], *, timeout: float, expect: set[str] = frozenset(), **run: object
) -> Iterator[tuple[VmResult, dict[str, tuple[str, str]]]]:
    vm = Vm()
    problem = vm.missing()
    if problem:
        pytest.skip(f"kernel VM not set up: {problem}")
    r = vm.run(guest_command(paths), timeout=timeout, **run)
    try:
        cases = check(r, timeout, expect)
        if os.environ.get("QVW_GUEST_PYTEST_ARGS"):
            print((r.job / "guest.log").read_text()[-20000:])
        yield r, cases
    finally:
        shutil.rmtree(r.job, ignore_errors=True)
