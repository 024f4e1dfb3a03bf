"""Boots the kernel VM (tests/vm/runner.py) and runs tests/vm/guest there as one pytest session.

Marked ``kernel_vm``: ``pytest -m kernel_vm`` runs just this. The guest's own
results come back as a JUnit XML file in the job directory; this test fails
with the guest's failure text for each guest test that did not pass, and when
a guest test never ran (every test function in tests/vm/guest must show up,
none skipped).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm.session import defined_tests, guest_session

GUEST = Path(__file__).resolve().parent / "guest"
SESSION_TIMEOUT = 300.0


@pytest.mark.kernel_vm
def test_kernel_session_in_vm():
    with guest_session(
        ["tests/vm/guest"], timeout=SESSION_TIMEOUT, expect=defined_tests(GUEST)
    ) as (r, cases):
        print(f"kernel VM session: {len(cases)} passed in {r.seconds:.1f} s (boot included)")
        rss = r.job / "rss.json"
        if rss.exists():
            print(f"daemon RSS in the VM (MiB): {rss.read_text()}")
