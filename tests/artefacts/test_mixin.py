"""The monitoring mixin (qbt_vpn_watchdog/mixin/): one source, rendered for the user's Prometheus.

The shipped rules, promtool tests and dashboard are the source; rendering with
no option gives them back exactly. A selector must reach every vector
selector of every expression: checked here with the tests' own PromQL reader
(tests/support/monitoring.py, not the mixin's), with promtool on the rendered
rules, and with the rendered promtool tests run against series of another job
added beside the selected ones (an expression the selector missed would read
them and fire, or fire differently).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

from qbt_vpn_watchdog import mixin
from qbt_vpn_watchdog.mixin import (
    DASHBOARD_NAME,
    DEFAULT_JOB,
    RULES_NAME,
    TESTS_DIR,
    MixinError,
    Options,
    inject,
    parse_selector,
    render_all,
    render_dashboard,
    render_rules,
    render_tests,
)
from tests.support.monitoring import (
    ROOT,
    dashboard_queries,
    grafana_to_promql,
    metric_names,
    promtool_check_exprs,
    selectors,
)

needs_promtool = pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")

SELECTOR = 'job="torrent-box", env="prod"'
CUSTOM = Options(
    selector=parse_selector(SELECTOR),
    runbook_url_pattern="https://wiki.example.org/runbooks/qbt-vpn-watchdog#%s",
    labels=(("team", "media"), ("site", "attic")),
)
WANT = (("job", "=", "torrent-box"), ("env", "=", "prod"))
RULES_TEXT = (ROOT / RULES_NAME).read_text()
DASHBOARD_TEXT = (ROOT / DASHBOARD_NAME).read_text()
_BRACED = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{[^{}]*\}")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qbt_vpn_watchdog.mixin", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip


def rule_exprs(text: str) -> list[tuple[str, str]]:
    doc = yaml.safe_load(text)
    return [(r.get("alert") or r["record"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def assert_selected(where: str, expr: str) -> None:
    """Every vector selector of `expr` carries the selector; no metric name is bare."""
    sels = selectors(expr)
    assert sels, f"{where}: no selector in {expr!r}"
    for sel in sels:
        for m in WANT:
            assert m in sel.matchers, f"{where}: {sel} lacks {m} in {expr!r}"
        labels = [label for label, _, _ in sel.matchers]
        assert len(labels) == len(set(labels)), f"{where}: a label matched twice in {expr!r}"
    bare = metric_names(_BRACED.sub(" ", expr))
    assert not bare, f"{where}: {sorted(bare)} without the selector in {expr!r}"


# --- the default is the identity ----------------------------------------------------


def test_the_default_renders_the_shipped_files_exactly():
    assert Options().is_default
    assert render_rules(RULES_TEXT, Options()) == RULES_TEXT
    assert render_dashboard(DASHBOARD_TEXT, Options()) == DASHBOARD_TEXT
    files = render_all(ROOT, Options())
    tests = sorted(p for p in files if p.startswith(TESTS_DIR))
    assert tests == sorted(f"{TESTS_DIR}/{p.name}" for p in (ROOT / TESTS_DIR).glob("*.yml"))
    for rel, text in files.items():
        assert text == (ROOT / rel).read_text(), rel
    r = cli()
    assert r.returncode == 0, r.stderr
    assert r.stdout == RULES_TEXT
    assert cli("--dashboard").stdout == DASHBOARD_TEXT


def test_the_default_transformation_runs_and_changes_nothing():
    # Not a shortcut: the same line-by-line rewrite that applies the options.
    assert render_rules(RULES_TEXT, Options(runbook_url_pattern="x#%s")) != RULES_TEXT
    text = (ROOT / TESTS_DIR / "watchdog.test.yml").read_text()
    doc = yaml.safe_load(text)
    rendered = yaml.safe_load(render_tests(text, Options(labels=(("a", "b"),))))
    assert rendered["tests"][0]["input_series"] == doc["tests"][0]["input_series"]
    assert rendered != doc


@pytest.mark.parametrize("selector", ['job="torrent-box", env="prod"', 'env="prod"'])
def test_rendered_tests_say_the_same_as_the_shipped_ones_for_the_target(selector):
    # Read back with a YAML parser: only the target's labels, the extra labels
    # and the runbook URL differ; with a selector that names no job the job stays.
    opts = Options(selector=parse_selector(selector), labels=(("team", "media"),),
                   runbook_url_pattern="https://wiki.example.org/rb#%s")  # fmt: skip
    target = {m.label: m.text for m in opts.selector}
    for path in sorted((ROOT / TESTS_DIR).glob("*.yml")):
        shipped = yaml.safe_load(path.read_text())
        rendered = yaml.safe_load(render_tests(path.read_text(), opts))
        for a, b in zip(shipped["tests"], rendered["tests"], strict=True):
            for sa, sb in zip(a["input_series"], b["input_series"], strict=True):
                assert sa["values"] == sb["values"]
                if f'job="{DEFAULT_JOB}"' in sa["series"]:
                    for k, v in target.items():
                        assert f"{k}={json.dumps(v)}" in sb["series"], sb
                    if "job" not in target:
                        assert f'job="{DEFAULT_JOB}"' in sb["series"]
                else:
                    assert sa["series"] == sb["series"]
            for ca, cb in zip(
                a.get("alert_rule_test", []), b.get("alert_rule_test", []), strict=True
            ):
                for ea, eb in zip(
                    ca.get("exp_alerts") or [], cb.get("exp_alerts") or [], strict=True
                ):
                    want = dict(ea["exp_labels"])
                    if want.get("job") == DEFAULT_JOB:
                        want = {**want, **target}
                    assert eb["exp_labels"] == {**want, "team": "media"}
                    url = f"https://wiki.example.org/rb#{ca['alertname'].lower()}"
                    assert eb["exp_annotations"]["runbook_url"] == url


# --- the selector reaches every query -----------------------------------------------


def test_the_selector_is_in_every_selector_of_every_rule():
    rendered = render_rules(RULES_TEXT, CUSTOM)
    exprs = rule_exprs(rendered)
    assert len(exprs) == len(rule_exprs(RULES_TEXT)) >= 28
    for where, expr in exprs:
        assert_selected(where, expr)
    # `up` followed the selector's job instead of keeping the shipped one.
    assert f'job="{DEFAULT_JOB}"' not in json.dumps(yaml.safe_load(rendered))


def test_the_selector_is_in_every_dashboard_query_and_variable():
    dash = json.loads(render_dashboard(DASHBOARD_TEXT, CUSTOM))
    queries = dashboard_queries(dash)
    assert len(queries) == len(dashboard_queries(json.loads(DASHBOARD_TEXT)))
    for where, expr in queries:
        assert_selected(where, expr)
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*), *\w+\)", v["definition"]).group(1)
            assert_selected(f"variable {v['name']}", inner)
            assert v["query"]["query"] == v["definition"]
    assert dash["links"][0]["url"] == "https://wiki.example.org/runbooks/qbt-vpn-watchdog"


@pytest.mark.parametrize(
    "expr, want",
    [
        ("up", 'up{job="torrent-box", env="prod"}'),
        ('up{job="qbt-vpn-watchdog"} == 0', 'up{job="torrent-box", env="prod"} == 0'),
        ('x{env=~"a|b", check="dns"}', 'x{job="torrent-box", env="prod", check="dns"}'),
        (
            "sum by (job, instance) (rate(a_total[5m])) / on (instance) group_left (version) b",
            'sum by (job, instance) (rate(a_total{job="torrent-box", env="prod"}[5m]))'
            ' / on (instance) group_left (version) b{job="torrent-box", env="prod"}',
        ),
        (
            "max without (reason) (c offset -5m) > bool 0",
            'max without (reason) (c{job="torrent-box", env="prod"} offset -5m) > bool 0',
        ),
        (
            "max_over_time(d[1h:5m] @ end())",
            'max_over_time(d{job="torrent-box", env="prod"}[1h:5m] @ end())',
        ),
        ('{__name__=~"qbtvpn_.+"}', '{job="torrent-box", env="prod", __name__=~"qbtvpn_.+"}'),
        (
            'label_replace(e, "up", "$1", "instance", "(.*):.*")',
            'label_replace(e{job="torrent-box", env="prod"}, "up", "$1", "instance", "(.*):.*")',
        ),
        (
            "topk(3, f) * 1e3 + Inf unless absent(g) and h atan2 i",
            'topk(3, f{job="torrent-box", env="prod"}) * 1e3 + Inf unless'
            ' absent(g{job="torrent-box", env="prod"}) and h{job="torrent-box", env="prod"}'
            ' atan2 i{job="torrent-box", env="prod"}',
        ),
        (
            'count_values("v", j) # sum(k)\n  or l',
            'count_values("v", j{job="torrent-box", env="prod"}) # sum(k)\n'
            '  or l{job="torrent-box", env="prod"}',
        ),
        (
            "instance:m:age > 60",  # a recording rule's output is a metric too
            'instance:m:age{job="torrent-box", env="prod"} > 60',
        ),
    ],
)
def test_inject_reads_the_promql(expr, want):
    got = inject(expr, parse_selector(SELECTOR))
    assert got == want
    assert inject(expr, ()) == expr


@needs_promtool
def test_injected_expressions_are_valid_promql(tmp_path):
    params = test_inject_reads_the_promql.pytestmark[0].args[1]
    exprs = [inject(expr, parse_selector(SELECTOR)) for expr, _ in params]
    r = promtool_check_exprs(exprs, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--selector", "job=torrent-box"], "expected label matchers"),
        (["--selector", 'job="a", job="b"'], "matched twice"),
        (["--runbook-url-pattern", "https://wiki.example.org/runbook"], "exactly one %s"),
        (["--label", "team"], "expected name=value"),
        (["--label", "severity=info"], "the rules set it themselves"),
        (["--label", "1team=x"], "not a Prometheus label name"),
    ],
)
def test_bad_options_exit_2_with_what_was_wrong(args, message):
    r = cli(*args)
    assert r.returncode == 2 and message in r.stderr and not r.stdout, r.stderr


def test_tests_need_equality_matchers_to_know_the_series_labels():
    with pytest.raises(MixinError, match="equality matchers only"):
        render_tests(
            (ROOT / TESTS_DIR / "watchdog.test.yml").read_text(),
            Options(selector=parse_selector('job=~"torrent-.*"')),
        )


# --- runbook URL and labels ------------------------------------------------------


def test_runbook_url_pattern_and_labels_on_every_alert():
    doc = yaml.safe_load(render_rules(RULES_TEXT, CUSTOM))
    rules = [r for g in doc["groups"] for r in g["rules"]]
    alerts = [r for r in rules if "alert" in r]
    assert len(alerts) >= 26
    for r in alerts:
        want = f"https://wiki.example.org/runbooks/qbt-vpn-watchdog#{r['alert'].lower()}"
        assert r["annotations"]["runbook_url"] == want
        assert r["labels"]["team"] == "media" and r["labels"]["site"] == "attic", r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning")
    for r in rules:
        if "record" in r:
            assert "labels" not in r  # recorded series keep the target's labels only


def test_the_quoted_selector_in_an_annotation_follows_the_expression():
    doc = yaml.safe_load(render_rules(RULES_TEXT, CUSTOM))
    (missing,) = [
        r
        for g in doc["groups"]
        for r in g["rules"]
        if r.get("alert") == "QbtVpnWatchdogTargetMissing"
    ]
    assert 'up{job="torrent-box", env="prod"}' in missing["annotations"]["description"]
    assert missing["expr"] == 'absent(up{job="torrent-box", env="prod"})'


# --- promtool: default and custom selector ---------------------------------------


def _write(files: dict[str, str], out: Path) -> list[Path]:
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    return sorted((out / TESTS_DIR).glob("*.yml"))


def _with_decoys(tests: list[Path]) -> None:
    """Add every shipped input series again, as it is (job="qbt-vpn-watchdog", no env)."""
    for path in tests:
        shipped = yaml.safe_load((ROOT / TESTS_DIR / path.name).read_text())
        doc = yaml.safe_load(path.read_text())
        for group, orig in zip(doc["tests"], shipped["tests"], strict=True):
            group["input_series"] += orig["input_series"]
        path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _promtool_test(tests: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["promtool", "test", "rules", *map(str, tests)], capture_output=True, text=True, timeout=120
    )


@needs_promtool
def test_promtool_check_rules_on_the_custom_render(tmp_path):
    path = tmp_path / "rules.yml"
    path.write_text(render_rules(RULES_TEXT, CUSTOM))
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode == 0 and "WARNING" not in r.stdout + r.stderr, r.stdout + r.stderr


@needs_promtool
def test_promtool_tests_pass_for_the_default_render(tmp_path):
    tests = _write(render_all(ROOT, Options()), tmp_path)
    assert len(tests) >= 5
    r = _promtool_test(tests)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
@pytest.mark.parametrize("selector", [SELECTOR, 'env="prod"'])
def test_promtool_tests_pass_for_a_custom_selector_beside_other_series(tmp_path, selector):
    opts = Options(
        selector=parse_selector(selector),
        runbook_url_pattern=CUSTOM.runbook_url_pattern,
        labels=CUSTOM.labels,
    )
    tests = _write(render_all(ROOT, opts), tmp_path)
    series = yaml.safe_load(tests[0].read_text())["tests"][0]["input_series"]
    labels = ",".join(f"{m.label}={m.value}" for m in opts.selector)
    assert all(labels in s["series"] for s in series if "job=" in s["series"])
    # The shipped series again, beside them: the selector must keep them out.
    _with_decoys(tests)
    r = _promtool_test(tests)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(tests) >= 5


@needs_promtool
def test_the_decoys_catch_a_rule_the_selector_missed(tmp_path):
    # The same run with one alert's expression left as shipped: it reads the
    # other job's series and fires where the tests expect silence.
    tests = _write(render_all(ROOT, CUSTOM), tmp_path)
    _with_decoys(tests)
    rules = tmp_path / RULES_NAME
    text = rules.read_text()
    missed = re.sub(r'(?<![\w:])up\{job="torrent-box", env="prod"\} == 0', "up == 0", text, count=1)
    assert missed != text
    rules.write_text(missed)
    r = _promtool_test(tests)
    assert r.returncode != 0 and "QbtVpnWatchdogDown" in r.stdout + r.stderr


@needs_promtool
def test_the_dashboard_rendered_for_a_selector_is_valid_promql(tmp_path):
    dash = json.loads(render_dashboard(DASHBOARD_TEXT, CUSTOM))
    r = promtool_check_exprs([grafana_to_promql(e) for _, e in dashboard_queries(dash)], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


# --- shipped in the wheel ------------------------------------------------------------


def test_an_installed_wheel_carries_the_mixin_and_renders_from_it(tmp_path):
    """data-files put the files under <venv>/share/qbt-vpn-watchdog/; the mixin finds them."""
    # Built from a copy holding what the Nix package's source fileset holds:
    # the build leaves nothing in the checkout, and proves the list complete.
    src = tmp_path / "src"
    for rel in (
        "pyproject.toml",
        "README.md",
        "watchdog",
        "alerts",
        "dashboards",
        "docs/runbook.md",
    ):
        if (ROOT / rel).is_dir():
            shutil.copytree(
                ROOT / rel, src / rel, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
            )
        else:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / rel, src / rel)
    wheels = tmp_path / "wheels"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(wheels), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = wheels.glob("qbt_vpn_watchdog-*.whl")
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)  # ensurepip: offline
    py = env / "bin" / "python"
    # The new environment's own pip (this one's, given --prefix, would first
    # uninstall the project from the environment running these tests).
    r = subprocess.run(
        [str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    share = env / mixin.SHARE
    shipped = [RULES_NAME, mixin.ALERTMANAGER_NAME, DASHBOARD_NAME, mixin.RUNBOOK_NAME]
    shipped += [f"{TESTS_DIR}/{p.name}" for p in (ROOT / TESTS_DIR).glob("*.yml")]
    for rel in shipped:
        assert (share / rel).read_bytes() == (ROOT / rel).read_bytes(), rel
    # The installed renderer, run from elsewhere, reads the installed files.
    out = tmp_path / "out"
    r = subprocess.run(
        [str(py), "-m", "qbt_vpn_watchdog.mixin", "--selector", SELECTOR, "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    # No PyYAML there (the package does not need it): the tests render all the same.
    r = subprocess.run([str(py), "-c", "import yaml"], capture_output=True, timeout=60)
    assert r.returncode != 0
    for path in (ROOT / TESTS_DIR).glob("*.yml"):
        assert (out / TESTS_DIR / path.name).read_text() == render_tests(
            path.read_text(), Options(selector=CUSTOM.selector)
        )
    assert (out / RULES_NAME).read_text() == render_rules(
        RULES_TEXT, Options(selector=CUSTOM.selector)
    )
    assert (out / DASHBOARD_NAME).read_text() == render_dashboard(
        DASHBOARD_TEXT, Options(selector=CUSTOM.selector)
    )
    assert (out / mixin.RUNBOOK_NAME).is_file()  # the default runbook_url resolves beside it
    r = subprocess.run(
        [str(py), "-c", "from qbt_vpn_watchdog.mixin import source_root; print(source_root())"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert Path(r.stdout.strip()) == share
