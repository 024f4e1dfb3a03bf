"""The daemon hands the C heap's free pages back after each cycle (glibc's malloc_trim).

Each check runs in a thread of its own and glibc gives such threads heaps of
their own; what a cycle frees there stays in RSS until trimmed. Measured in a
fresh interpreter (a subprocess), so that nothing else in the test session
moves its RSS.
"""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from qbt_vpn_watchdog import daemon, libc

CHILD = r"""
import threading
from qbt_vpn_watchdog.daemon import release_free_memory

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

def churn():
    # 40 MiB in 2 KiB blocks: above pymalloc's 512 bytes (so malloc's), below
    # its mmap threshold (so kept in the thread's heap once freed), and one in
    # eight kept so that the heap cannot simply shrink from its top.
    blocks = [bytes(2048) for _ in range(20_000)]
    kept = blocks[::8]
    del blocks
    return kept

out = []
t = threading.Thread(target=lambda: out.append(churn()))
t.start(); t.join()
before = rss_kib()
release_free_memory()
print(before, rss_kib())
"""


@pytest.mark.skipif(not libc.malloc_trim(), reason="not glibc: no malloc_trim")
def test_a_cycles_freed_heap_goes_back_to_the_kernel():
    got = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    before, after = map(int, got.stdout.split())
    # 35 MiB of the 40 were freed; at least 20 MiB of it must leave RSS.
    assert before - after >= 20 * 1024, (before, after)


def test_a_c_library_without_malloc_trim_is_no_error(monkeypatch):
    # musl has no malloc_trim: looking it up raises AttributeError, as this
    # stand-in for the library handle does. The daemon must run on without it.
    monkeypatch.setattr(libc, "_handle", types.SimpleNamespace())
    monkeypatch.setattr(libc, "_functions", {})
    assert libc.malloc_trim() is False
    daemon.release_free_memory()
    assert libc._functions == {"malloc_trim": None}  # looked up once, not every cycle
