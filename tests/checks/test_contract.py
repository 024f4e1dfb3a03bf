"""The check contract: a registered check has a config table, and the reverse.

A check registered without a ``[checks.<name>]`` table in ``config.ChecksSection``
would never run (nothing enables it) and nothing would say so; ``load_all``
refuses to load such a set, and these tests keep the rule itself honest.
"""

from __future__ import annotations

import dataclasses

from qbt_vpn_watchdog.checks import CheckSpec, contract_errors, load_all, unsafe
from qbt_vpn_watchdog.config import CheckBase, ChecksSection, Config
from qbt_vpn_watchdog.results import Outcome


def _spec(name: str) -> CheckSpec:
    return CheckSpec(name, lambda ctx: Outcome.passed(), (unsafe("broken"),), "made up", 999)


def test_every_registered_check_has_its_config_table_and_every_table_a_check():
    specs = load_all()
    assert contract_errors(specs) == []
    tables = {f.name for f in dataclasses.fields(ChecksSection)}
    assert set(specs) == tables
    assert all(isinstance(Config().check(n), CheckBase) for n in specs)


def test_a_check_without_a_table_is_named():
    specs = {**load_all(), "made_up": _spec("made_up")}
    assert contract_errors(specs) == [
        "check 'made_up' is registered but ChecksSection has no 'made_up' table"
    ]


def test_a_table_without_a_check_is_named():
    specs = {n: s for n, s in load_all().items() if n != "ipv6"}
    assert contract_errors(specs) == ["ChecksSection.ipv6 configures no registered check"]
