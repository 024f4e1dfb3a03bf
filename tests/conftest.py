"""Shared test setup.

Markers (see pyproject.toml): ``root`` tests need root for namespaces and
nftables and are skipped otherwise; ``lab`` tests use the ``lab`` fixture from
tests/support/lab_fixture.py, which brings the lab up once per session and tears it
down even when tests fail.
"""

import os

import pytest

pytest_plugins = ["tests.support.lab_fixture", "tests.support.installed"]


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces)")
    for item in items:
        if "root" in item.keywords or "lab" in item.keywords:
            item.add_marker(skip)
