"""Helpers shared by the alert, dashboard and Prometheus lab tests.

A deliberately small PromQL reader: it finds the vector selectors of an
expression (name and label matchers) and the metric names it uses, enough to
check every name against the metric catalogue. It is not a parser; promtool
checks the syntax.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from qbt_vpn_watchdog.metrics import BY_NAME
from qbt_vpn_watchdog.mixin import Options

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "qbt-vpn-watchdog.rules.yml"
RULE_TESTS = sorted((ROOT / "alerts" / "tests").glob("*.yml"))
ALERTMANAGER = ROOT / "alerts" / "alertmanager.yml"
DASHBOARD = ROOT / "dashboards" / "qbt-vpn-watchdog.json"
RUNBOOK = ROOT / "docs" / "runbook.md"

# Where every shipped alert's runbook_url points (+ "#<alertname lowercased>"):
# the mixin's default pattern, relative to the folder of the shipped files.
RUNBOOK_BASE = Options().runbook_page
JOB = "qbt-vpn-watchdog"

# Series that are not the watchdog's own: Prometheus's per-target `up`.
PROMETHEUS_OWN = {"up": ("job", "instance")}
TARGET_LABELS = ("job", "instance")

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "inf", "nan",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^{}]*)\}")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w$:.])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])")


@dataclass(frozen=True)
class Selector:
    name: str | None
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value)

    def labels(self) -> set[str]:
        return {m[0] for m in self.matchers}


def selectors(expr: str) -> list[Selector]:
    """The vector selectors with braces, e.g. ``up{job="x"}`` -> Selector("up", ...)."""
    out = []
    for m in _SELECTOR.finditer(expr):
        body = m.group(2)
        matchers = []
        pos = 0
        while pos < len(body.strip()):
            mm = _MATCHER.match(body, pos)
            if not mm:
                raise ValueError(f"cannot read label matchers {{{body}}} in {expr!r}")
            matchers.append((mm.group(1), mm.group(2), mm.group(3)))
            pos = mm.end()
        out.append(Selector(m.group(1), tuple(matchers)))
    return out


def metric_names(expr: str) -> set[str]:
    """Every metric name the expression reads (functions, keywords and labels excluded)."""
    s = _SELECTOR.sub(lambda m: (m.group(1) or "") + " ", expr)  # drop matchers
    s = _STRING.sub(" ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range and subquery durations
    s = re.sub(r"\$\{[^}]*\}|\$\w+", " ", s)  # Grafana variables
    s = _GROUPING.sub(" ", s)  # label lists of by/on/group_left...
    s = re.sub(r"\boffset\s+\S+", " ", s)
    names = set()
    for m in _IDENT.finditer(s):
        word = m.group(1)
        if word.lower() in _KEYWORDS:
            continue
        if re.match(r"\s*\(", s[m.end() :]):  # a function or an aggregation
            continue
        names.add(word)
    return names


def problems(expr: str, recorded: set[str] = frozenset()) -> list[str]:
    """Names not in the catalogue, and label matchers the metric does not have."""
    out = []
    for name in sorted(metric_names(expr)):
        if name not in BY_NAME and name not in PROMETHEUS_OWN and name not in recorded:
            out.append(f"{name}: not in qbt_vpn_watchdog.metrics.CATALOGUE")
    for sel in selectors(expr):
        if sel.name is None or sel.name in recorded:
            continue
        if sel.name in BY_NAME:
            known = set(BY_NAME[sel.name].labels) | set(TARGET_LABELS)
        elif sel.name in PROMETHEUS_OWN:
            known = set(PROMETHEUS_OWN[sel.name])
        else:
            continue  # already reported above
        for label in sorted(sel.labels() - known):
            out.append(f"{sel.name}{{{label}=...}}: {sel.name} has no label {label!r}")
    return out


# --- the artefacts ------------------------------------------------------------


def load_rules() -> dict:
    return yaml.safe_load(RULES.read_text())


def alert_rules() -> list[dict]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r]


def recording_rules() -> list[dict]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "record" in r]


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries(dash: dict) -> list[tuple[str, str]]:
    """(where, expr) for every panel target, annotation query and query variable."""
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} target {t.get('refId')}", t.get("expr", "")))
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append((f"annotation {a['name']!r}", a["expr"]))
    return out


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables so Prometheus can run the query."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
    expr = expr.replace("$__range", "5m")
    return expr.replace("$instance", ".+").replace("$job", JOB)


def promtool_check_exprs(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """promtool has no "check this expression": each one becomes a recording rule."""
    rules = [{"record": f"check:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "exprs.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]}))
    return subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def duration_seconds(d: str) -> float:
    """A Prometheus duration such as 1m30s -> 90.0."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", d)
    if not parts or "".join(n + u for n, u in parts) != d:
        raise ValueError(f"not a duration: {d!r}")
    return float(sum(int(n) * units[u] for n, u in parts))


@contextmanager
def prometheus_with_basic_auth(tmp_path: Path, target: str, ca_file: Path, jobs: dict):
    """A real Prometheus scraping ``target`` over HTTPS every second: one job per
    (name -> password file), each as user "prometheus". Yields (targets, api, proc):
    ``targets()`` maps each job already scraped to Prometheus's active target."""
    import requests

    from tests.support.procs import Proc

    def job(name: str, password_file) -> dict:
        return {
            "job_name": name,
            "scheme": "https",
            "tls_config": {"ca_file": str(ca_file)},
            "basic_auth": {"username": "prometheus", "password_file": str(password_file)},
            "static_configs": [{"targets": [target]}],
        }

    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [job(name, pw) for name, pw in jobs.items()],
    }))  # fmt: skip
    proc = Proc(
        ["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        tmp_path / "prometheus.log",
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v1"

    def targets() -> dict[str, dict]:
        try:
            with requests.Session() as s:
                s.trust_env = False  # loopback only
                data = s.get(f"{api}/targets", timeout=2).json()["data"]["activeTargets"]
        except (requests.RequestException, ValueError, KeyError):
            return {}
        return {t["labels"]["job"]: t for t in data if t["health"] != "unknown"}

    try:
        yield targets, api, proc
    finally:
        proc.stop()
