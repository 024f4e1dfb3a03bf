"""The README says what the code does: its generated parts are checked against the sources."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from watchdog.config import example_path
from watchdog.metrics import CATALOGUE

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def block_after(marker: str, lang: str) -> str:
    i = README.index(marker)
    start = README.index(f"```{lang}\n", i) + len(lang) + 4
    return README[start : README.index("\n```", start)]


def test_no_placeholder_is_left():
    assert "@@" not in README


def test_the_example_config_is_the_shipped_one():
    assert block_after("The commented example, with every default", "toml") == (
        example_path().read_text().rstrip("\n")
    )


def test_the_example_host_is_the_shipped_one():
    shown = block_after("`nix/example-host.nix`, the whole of it", "nix")
    assert shown == (ROOT / "nix" / "example-host.nix").read_text().rstrip("\n")


def test_the_metric_table_is_the_catalogue():
    rows = re.findall(r"^\| `(qbtvpn_\w+)` \| (\w+) \| ([^|]*) \| ([^|]*) \|$", README, re.M)
    table = {name: (typ, labels.strip(), meaning.strip()) for name, typ, labels, meaning in rows}
    want = {
        m.name: (m.type, ", ".join(f"`{x}`" for x in m.labels) or "-", m.help) for m in CATALOGUE
    }
    assert table == want


def test_every_alert_is_in_the_table_with_its_severity_and_for():
    rules = yaml.safe_load((ROOT / "alerts" / "qbt-vpn-watchdog.rules.yml").read_text())
    rows = dict(
        (name, (sev, after))
        for name, sev, after in re.findall(r"^\| `([A-Z]\w+)` \| (\w+) \| ([^|]+) \|", README, re.M)
    )
    for g in rules["groups"]:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            assert r["alert"] in rows, f"{r['alert']} missing from the README's alert table"
            sev, after = rows[r["alert"]]
            assert sev == r["labels"]["severity"], r["alert"]
            shown = r["for"].replace("m", " m").replace("s", " s")
            assert after.strip().endswith(shown), (r["alert"], after, r["for"])


def test_the_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    command = (
        "sudo scripts/setup.sh && sudo .venv/bin/pytest -q"
        " && sudo QBT_VERSION=5.1 .venv/bin/pytest -q -m qbittorrent"
    )
    assert command in README
    assert "bash scripts/setup.sh" in ci
    runs = [line.strip() for line in ci.splitlines() if ".venv/bin/pytest" in line]
    assert runs == [".venv/bin/pytest -q", "QBT_VERSION=5.1 .venv/bin/pytest -q -m qbittorrent"]


def test_the_qbittorrent_marker_is_declared():
    # CI's second run selects on it; an undeclared marker would select nothing, silently.
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    markers = pyproject["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("qbittorrent:") for m in markers)


def test_the_qbittorrent_versions_doc_is_linked():
    assert "(docs/qbittorrent-versions.md)" in README
    assert (ROOT / "docs" / "qbittorrent-versions.md").exists()


def test_the_check_table_is_the_registry():
    from watchdog.checks import load_all

    start = README.index("| check | passes when | failure reasons |")
    block = README[start : README.index("\n\n", start)]
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \| [^|]+ \|$", block, re.M)
    table = {name: set(re.findall(r"`(\w+)`", reasons)) for name, reasons in rows}
    want = {name: set(spec.reason_names) for name, spec in load_all().items()}
    assert table == want
