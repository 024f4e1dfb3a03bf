"""The README and docs/ say what the code does: their generated parts are checked against the sources."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from qbt_vpn_watchdog.config import example_path, render_example
from qbt_vpn_watchdog.metrics import CATALOGUE

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"

# Linked from the README's contents and written on other branches; a file
# here that exists is checked like any other link.
ELSEWHERE = {"docs/nixos.md", "docs/vm-tests.md", "docs/qbittorrent-versions.md",
             "docs/architecture.md"}  # fmt: skip


def doc(name: str) -> str:
    return (DOCS / name).read_text()


def block_after(text: str, marker: str, lang: str) -> str:
    i = text.index(marker)
    start = text.index(f"```{lang}\n", i) + len(lang) + 4
    return text[start : text.index("\n```", start)]


def test_no_placeholder_is_left():
    for text in (README, *(p.read_text() for p in DOCS.glob("*.md"))):
        assert "@@" not in text


def test_the_readme_is_an_operators_first_screen():
    assert len(README.encode()) <= 20 * 1024, f"README is {len(README.encode())} bytes"
    heads = re.findall(r"^## (.+)$", README, re.M)
    # What it is comes first (the text before any heading), then the two
    # commands, then install -> config -> check -> run -> scrape -> alerts.
    assert heads[0] == "The two commands"
    order = ["Install", "Configure", "Check once", "Run", "Prometheus", "Alerts"]
    assert [h for h in heads if h in order] == order


def test_every_local_link_resolves():
    for source, text in [("README.md", README)] + [
        (f"docs/{p.name}", p.read_text()) for p in DOCS.glob("*.md")
    ]:
        base = ROOT if source == "README.md" else DOCS
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", text):
            path = (base / target).resolve()
            rel = path.relative_to(ROOT).as_posix()
            assert path.exists() or rel in ELSEWHERE, f"{source} links to missing {target}"


def test_no_seed_or_task_wording_anywhere():
    # Product text says "the 92-byte failure". "seeder"/"seeding" are torrent
    # words and random.Random(seed) is a parameter: neither matches.
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    ).stdout.split()  # fmt: skip
    pattern = re.compile(r"task-103|\bseed's\b|\bthe seed\b|\bseed (?:criteri|host|box)", re.I)
    found = []
    for name in files:
        path = ROOT / name
        if path.suffix in {".hex", ".json", ".torrent"} or not path.is_file():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line) and name != "tests/artefacts/test_readme.py":
                found.append(f"{name}:{n}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_example_config_is_the_shipped_one():
    shown = block_after(doc("configuration.md"), "## Every key", "toml")
    assert shown == example_path().read_text().rstrip("\n") == render_example().rstrip("\n")


def test_the_example_host_is_the_shipped_one():
    shown = block_after(doc("nixos-host.md"), "`nix/example-host.nix`, the whole of it", "nix")
    assert shown == (ROOT / "nix" / "example-host.nix").read_text().rstrip("\n")


def test_the_metric_table_is_the_catalogue():
    rows = re.findall(
        r"^\| `(qbtvpn_\w+)` \| (\w+) \| ([^|]*) \| ([^|]*) \|$", doc("metrics.md"), re.M
    )
    table = {name: (typ, labels.strip(), meaning.strip()) for name, typ, labels, meaning in rows}
    want = {
        m.name: (m.type, ", ".join(f"`{x}`" for x in m.labels) or "-", m.help) for m in CATALOGUE
    }
    assert table == want


def _alerts() -> list[dict]:
    rules = yaml.safe_load((ROOT / "alerts" / "qbt-vpn-watchdog.rules.yml").read_text())
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_is_in_the_table_with_its_severity_and_for():
    # The table lives in docs/alerting.md ("Every alert"); README links it.
    rows = dict(
        (name, (sev, after))
        for name, sev, after in re.findall(
            r"^\| `([A-Z]\w+)` \| (\w+) \| ([^|]+) \|", doc("alerting.md"), re.M
        )
    )
    alerts = _alerts()
    assert set(rows) == {r["alert"] for r in alerts}
    for r in alerts:
        sev, after = rows[r["alert"]]
        assert sev == r["labels"]["severity"], r["alert"]
        shown = r["for"].replace("m", " m").replace("s", " s")
        assert after.strip().endswith(shown), (r["alert"], after, r["for"])


def test_the_counts_are_true():
    n = len(_alerts())
    assert f"{n} alerts, all named `QbtVpn...`" in README
    assert f"and {n} alerts, all named" in doc("alerting.md")


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


def _check_table(text: str, header: str, columns: int) -> dict[str, set[str]]:
    start = text.index(header)
    block = text[start : text.index("\n\n", start)]
    cells = r" \| ([^|]+)" * (columns - 1)
    rows = re.findall(rf"^\| `(\w+)`{cells} \|$", block, re.M)
    # The reasons are the backquoted words of the column after "passes/fails when".
    return {row[0]: set(re.findall(r"`(\w+)`", row[2])) for row in rows}


def test_the_check_tables_are_the_registry():
    from qbt_vpn_watchdog.checks import load_all

    want = {name: set(spec.reason_names) for name, spec in load_all().items()}
    assert _check_table(README, "| check | fails when | reasons |", 3) == want
    assert _check_table(doc("checks.md"), "| check | passes when | failure reasons |", 4) == want
