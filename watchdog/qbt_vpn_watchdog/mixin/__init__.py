"""The monitoring mixin: alert rules, their promtool tests and the Grafana dashboard, rendered
for your Prometheus.

    qbt-vpn-watchdog-mixin --selector 'job="torrent-box", env="prod"' \\
        --runbook-url-pattern 'https://wiki.example.org/runbooks/qbt-vpn-watchdog#%s' \\
        --label team=media --out /etc/prometheus/qbt-vpn-watchdog

The shipped files (alerts/qbt-vpn-watchdog.rules.yml, alerts/tests/*.test.yml,
dashboards/qbt-vpn-watchdog.json) are the one source; this renders them with:

- a selector (label matchers as inside PromQL braces) put into EVERY vector
  selector of every rule, test and dashboard query, found by reading the
  PromQL (not by text replacement): metric names without braces get it,
  braces get it first, and a matcher on a label the selector names is
  replaced by the selector's (so ``up{job="qbt-vpn-watchdog"}`` follows
  ``job="torrent-box"``);
- a runbook URL pattern, ``%s`` = the alert name lowercased (the section's
  anchor in docs/runbook.md), as kubernetes-mixin's runbookURLPattern;
- extra labels on every alert (e.g. team=media for your Alertmanager routes).

With none of them the output is the shipped files exactly (a test keeps it
so). The default runbook URL, ``docs/runbook.md#<alert>``, is a path relative
to the folder holding alerts/ and dashboards/ (the repository, or
``<prefix>/share/qbt-vpn-watchdog/`` where the wheel and the Nix package
install the files, runbook included): the project has no web address of its
own, so point the pattern at a URL your on-call can open.

Standard library only: the rules and the tests are rewritten line by line (their
comments and layout kept), the dashboard through json.

The package: promql.py reads PromQL and puts the selector in, options.py holds
the shipped files' names and what the user asks for, rules.py renders the
rules and their promtool tests, dashboard.py the dashboard, files.py finds the
shipped files, renders them all, and is the command (``main``).
"""

from __future__ import annotations

from qbt_vpn_watchdog.mixin.dashboard import render_dashboard
from qbt_vpn_watchdog.mixin.files import main, render_all, rule_test_files, source_root
from qbt_vpn_watchdog.mixin.options import (
    ALERTMANAGER_NAME,
    DASHBOARD_NAME,
    DEFAULT_JOB,
    DEFAULT_RUNBOOK_URL_PATTERN,
    RULES_NAME,
    RUNBOOK_NAME,
    SHARE,
    TESTS_DIR,
    Options,
    parse_labels,
)
from qbt_vpn_watchdog.mixin.promql import (
    Matcher,
    MixinError,
    inject,
    inject_in_text,
    parse_selector,
)
from qbt_vpn_watchdog.mixin.rules import render_rules, render_tests

__all__ = [
    "ALERTMANAGER_NAME", "DASHBOARD_NAME", "DEFAULT_JOB", "DEFAULT_RUNBOOK_URL_PATTERN",
    "RULES_NAME", "RUNBOOK_NAME", "SHARE", "TESTS_DIR", "Matcher", "MixinError", "Options",
    "inject", "inject_in_text", "main", "parse_labels", "parse_selector", "render_all",
    "render_dashboard", "render_rules", "render_tests", "rule_test_files", "source_root",
]  # fmt: skip
