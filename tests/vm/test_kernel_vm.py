"""Boots the kernel VM (tests/vm/runner.py) and runs tests/vm/guest there as one pytest session.

Marked ``kernel_vm``: ``pytest -m kernel_vm`` runs just this. The guest's own
results come back as a JUnit XML file in the job directory; this test fails
with the guest's failure text for each guest test that did not pass, and when
a guest test never ran (every test function in tests/vm/guest must show up,
none skipped).
"""

from __future__ import annotations

import ast
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.vm.runner import Vm

REPO = Path(__file__).resolve().parents[2]
GUEST = Path(__file__).resolve().parent / "guest"
SESSION_TIMEOUT = 300.0


def guest_test_names() -> set[str]:
    names = set()
    for f in GUEST.glob("test_*.py"):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def guest_command(paths: list[str]) -> str:
    # -p no:cacheprovider: the guest's writes land in a tmpfs anyway.
    return (
        f"cd {REPO} && exec {sys.executable} -m pytest -q -p no:cacheprovider -rA"
        f" --junitxml=/run/qvw-job/junit.xml {' '.join(paths)}"
    )


def run_guest_session(paths: list[str], timeout: float = SESSION_TIMEOUT):
    vm = Vm()
    problem = vm.missing()
    if problem:
        pytest.skip(f"kernel VM not set up: {problem}")
    return vm.run(guest_command(paths), timeout=timeout)


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


@pytest.mark.kernel_vm
def test_kernel_session_in_vm():
    r = run_guest_session(["tests/vm/guest"])
    try:
        tail = r.console[-6000:]
        assert not r.timed_out, f"the VM session took over {SESSION_TIMEOUT:g} s:\n{tail}"
        junit = r.job / "junit.xml"
        assert junit.exists(), f"the guest wrote no results (exit {r.exit_code}):\n{tail}"
        cases = junit_cases(junit)
        bad = {n: v for n, v in cases.items() if v[0] != "passed"}
        assert not bad, "in the VM:\n" + "\n".join(f"{n}: {o}\n{t}" for n, (o, t) in bad.items())
        ran = {n.split("[")[0] for n in cases}
        assert guest_test_names() <= ran, f"never ran in the VM: {guest_test_names() - ran}"
        assert r.exit_code == 0, f"guest pytest exited {r.exit_code}:\n{tail}"
        print(f"kernel VM session: {len(cases)} passed in {r.seconds:.1f} s (boot included)")
        rss = r.job / "rss.json"
        if rss.exists():
            print(f"daemon RSS in the VM (MiB): {rss.read_text()}")
    finally:
        shutil.rmtree(r.job, ignore_errors=True)
