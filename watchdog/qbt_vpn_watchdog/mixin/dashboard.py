"""The Grafana dashboard, rewritten through json: every panel query and variable query."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from qbt_vpn_watchdog.mixin.options import (
    Options,
)
from qbt_vpn_watchdog.mixin.promql import (
    _LABEL,
    Matcher,
    inject,
)

_LABEL_VALUES = re.compile(rf"^(\s*label_values\(\s*)(.*?)(\s*,\s*{_LABEL}\s*\)\s*)$", re.S)


def _inject_variable_query(query: str, sel: tuple[Matcher, ...]) -> str:
    m = _LABEL_VALUES.match(query)
    if m:
        return m.group(1) + inject(m.group(2), sel) + m.group(3)
    return inject(query, sel)


def _panels(panels: list[dict]) -> Iterable[dict]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))  # collapsed rows hold theirs


def render_dashboard(text: str, opts: Options) -> str:
    dash = json.loads(text)
    sel = opts.selector
    for p in _panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if "expr" in t:
                t["expr"] = inject(t["expr"], sel)
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            a["expr"] = inject(a["expr"], sel)
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        if isinstance(v.get("query"), dict) and "query" in v["query"]:
            v["query"]["query"] = _inject_variable_query(v["query"]["query"], sel)
        elif isinstance(v.get("query"), str):
            v["query"] = _inject_variable_query(v["query"], sel)
        if v.get("definition"):
            v["definition"] = _inject_variable_query(v["definition"], sel)
    default_page = Options().runbook_page
    for link in dash.get("links", []):
        if link.get("url") == default_page:
            link["url"] = opts.runbook_page
    return json.dumps(dash, indent=2, ensure_ascii=False) + "\n"
