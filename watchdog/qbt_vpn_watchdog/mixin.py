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
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

RULES_NAME = "alerts/qbt-vpn-watchdog.rules.yml"
ALERTMANAGER_NAME = "alerts/alertmanager.yml"
TESTS_DIR = "alerts/tests"
DASHBOARD_NAME = "dashboards/qbt-vpn-watchdog.json"
RUNBOOK_NAME = "docs/runbook.md"
# Every file the mixin is made of, as laid out in the repository and under
# <prefix>/share/qbt-vpn-watchdog/ (wheel data-files, Nix package).
SHARE = "share/qbt-vpn-watchdog"

DEFAULT_RUNBOOK_URL_PATTERN = RUNBOOK_NAME + "#%s"
# The job the shipped files name (Prometheus's `up` needs one).
DEFAULT_JOB = "qbt-vpn-watchdog"

_LABEL = r"[A-Za-z_][A-Za-z0-9_]*"
_MATCHER = re.compile(rf'\s*({_LABEL})\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")\s*')


class MixinError(ValueError):
    """An option or a source file the mixin cannot use; the message says which."""


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str  # the PromQL string literal, quotes included

    def __str__(self) -> str:
        return f"{self.label}{self.op}{self.value}"

    @property
    def text(self) -> str:
        return json.loads(self.value) if self.value.startswith('"') else self.value[1:-1]


def parse_selector(selector: str) -> tuple[Matcher, ...]:
    """'job="x", env=~"a|b"' -> matchers; '' -> (). Braces around it are accepted."""
    s = selector.strip()
    if s.startswith("{") and s.endswith("}"):
        s = s[1:-1].strip()
    if not s:
        return ()
    out: list[Matcher] = []
    pos = 0
    while True:
        m = _MATCHER.match(s, pos)
        if not m:
            raise MixinError(
                f"selector {selector!r}: expected label matchers as inside PromQL braces,"
                ' e.g. job="torrent-box" or job=~"torrent-.*", env="prod"'
            )
        out.append(Matcher(m.group(1), m.group(2), m.group(3)))
        pos = m.end()
        if pos == len(s):
            break
        if s[pos] != ",":
            raise MixinError(f"selector {selector!r}: expected ',' between matchers at {s[pos:]!r}")
        pos += 1
        if not s[pos:].strip():
            break  # a trailing comma, as PromQL allows
    labels = [m.label for m in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise MixinError(f"selector {selector!r}: label {dup[0]!r} matched twice")
    return tuple(out)


# --- PromQL -----------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$[A-Za-z0-9_]+|\[\[[A-Za-z0-9_]+\]\])
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[A-Za-z0-9_]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<lbrace>\{) | (?P<rbrace>\}) | (?P<lparen>\() | (?P<rparen>\))
  | (?P<lbrack>\[) | (?P<rbrack>\])
  | (?P<op>==|!=|<=|>=|=~|!~|[-+*/%^<>=,@])
    """,
    re.X,
)
# Words that are never metric names where they stand (PromQL's keywords and
# binary operators; `inf`/`nan` are numbers).
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
# Followed by a parenthesised list of label names, not an expression.
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
# Aggregation operators: `sum by (x) (...)` puts `by` between the name and "(".
_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip


def _tokens(expr: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise MixinError(f"cannot read PromQL at {expr[pos : pos + 30]!r} in {expr!r}")
        out.append((m.lastgroup or "", m.group()))
        pos = m.end()
    return out


def _matching(tokens: list[tuple[str, str]], i: int, open_: str, close: str) -> int:
    """Index of the token closing the group opened at tokens[i]."""
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j][0] == open_:
            depth += 1
        elif tokens[j][0] == close:
            depth -= 1
            if depth == 0:
                return j
    raise MixinError("unbalanced " + tokens[i][1] + " in " + "".join(t for _, t in tokens))


def _next(tokens: list[tuple[str, str]], i: int) -> int:
    """Index of the next token that is not whitespace or a comment (len() at the end)."""
    j = i
    while j < len(tokens) and tokens[j][0] in ("ws", "comment"):
        j += 1
    return j


def _inject_body(body: str, sel: tuple[Matcher, ...], expr: str) -> str:
    """The inside of one selector's braces with `sel` put first."""
    kept: list[str] = []
    pos = 0
    stripped = body.strip()
    while pos < len(stripped):
        m = _MATCHER.match(stripped, pos)
        if not m:
            raise MixinError(f"cannot read label matchers {{{body}}} in {expr!r}")
        if m.group(1) not in {s.label for s in sel}:
            kept.append(m.group().strip())
        pos = m.end()
        if pos < len(stripped):
            if stripped[pos] != ",":
                raise MixinError(f"cannot read label matchers {{{body}}} in {expr!r}")
            pos += 1
    return ", ".join([*map(str, sel), *kept])


def inject(expr: str, selector: Iterable[Matcher]) -> str:
    """`expr` with the selector's matchers in every vector selector.

    Reads the PromQL: function and aggregation names, keywords, label lists of
    by/without/on/ignoring/group_left/group_right, range and subquery
    durations, offsets, strings and Grafana variables are left alone; each
    metric name and each `{...}` gets the matchers. Whitespace, comments and
    the rest of the text stay as they were; an empty selector changes nothing.
    """
    sel = tuple(selector)
    if not sel:
        return expr
    tokens = _tokens(expr)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        if kind == "lbrack":  # [5m], [$__rate_interval], [1h:5m]
            j = _matching(tokens, i, "lbrack", "rbrack")
            out += [t for _, t in tokens[i : j + 1]]
            i = j + 1
            continue
        if kind == "lbrace":  # a selector without a metric name: {__name__=~"..."}
            j = _matching(tokens, i, "lbrace", "rbrace")
            body = "".join(t for _, t in tokens[i + 1 : j])
            out.append("{" + _inject_body(body, sel, expr) + "}")
            i = j + 1
            continue
        if kind != "ident":
            out.append(text)
            i += 1
            continue
        word = text.lower()
        n = _next(tokens, i + 1)
        nxt = tokens[n][0] if n < len(tokens) else ""
        if word in _GROUPING and nxt == "lparen":
            j = _matching(tokens, n, "lparen", "rparen")
            out += [t for _, t in tokens[i : j + 1]]
            i = j + 1
            continue
        if word == "offset":  # offset 5m, offset -1h, offset $var
            j = _next(tokens, i + 1)
            if j < len(tokens) and tokens[j][1] == "-":
                j = _next(tokens, j + 1)
            out += [t for _, t in tokens[i : j + 1]]
            i = j + 1
            continue
        if word in _KEYWORDS or word in _GROUPING or word in _AGGREGATIONS or nxt == "lparen":
            out.append(text)  # a keyword, an aggregation or a function
            i += 1
            continue
        # A metric name.
        if nxt == "lbrace":
            j = _matching(tokens, n, "lbrace", "rbrace")
            body = "".join(t for _, t in tokens[n + 1 : j])
            out += [text, *(t for _, t in tokens[i + 1 : n])]
            out.append("{" + _inject_body(body, sel, expr) + "}")
            i = j + 1
        else:
            out.append(text + "{" + ", ".join(map(str, sel)) + "}")
            i += 1
    return "".join(out)


# Selectors quoted in annotation text, e.g. "no target matching up{job="x"}":
# a name and braces holding at least one matcher (so never "{{ $labels.x }}").
_QUOTED_SELECTOR = re.compile(
    rf'(?<![\w{{$.])([A-Za-z_:][A-Za-z0-9_:]*)\{{(\s*{_LABEL}\s*(?:=~|!~|!=|=)\s*"[^{{}}]*)\}}'
)


def inject_in_text(text: str, selector: Iterable[Matcher]) -> str:
    """Selectors quoted in prose (annotations) rendered like the expressions."""
    sel = tuple(selector)
    if not sel:
        return text
    return _QUOTED_SELECTOR.sub(lambda m: inject(m.group(), sel), text)


# --- options ------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    selector: tuple[Matcher, ...] = ()
    runbook_url_pattern: str = DEFAULT_RUNBOOK_URL_PATTERN
    labels: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.runbook_url_pattern.count("%s") != 1:
            raise MixinError(
                f"runbook URL pattern {self.runbook_url_pattern!r}: needs exactly one %s"
                " (the alert name lowercased, e.g. https://wiki.example.org/runbook#%s)"
            )
        names = [k for k, _ in self.labels]
        for k in names:
            if not re.fullmatch(_LABEL, k) or k.startswith("__"):
                raise MixinError(f"label {k!r}: not a Prometheus label name")
            if names.count(k) > 1:
                raise MixinError(f"label {k!r} given twice")
            if k in ("alertname", "severity"):
                raise MixinError(f"label {k!r}: the rules set it themselves")

    @property
    def is_default(self) -> bool:
        return self == Options()

    def runbook_url(self, alert: str) -> str:
        return self.runbook_url_pattern.replace("%s", alert.lower())

    @property
    def runbook_page(self) -> str:
        """The pattern without its anchor: the dashboard's link to the runbook."""
        head = self.runbook_url_pattern.split("%s")[0]
        return head[:-1] if head.endswith("#") else head

    def describe(self) -> str:
        parts = []
        if self.selector:
            parts.append(f"--selector '{', '.join(map(str, self.selector))}'")
        if self.runbook_url_pattern != DEFAULT_RUNBOOK_URL_PATTERN:
            parts.append(f"--runbook-url-pattern '{self.runbook_url_pattern}'")
        parts += [f"--label '{k}={v}'" for k, v in self.labels]
        return " ".join(parts)


def parse_labels(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise MixinError(f"--label {item!r}: expected name=value, e.g. team=media")
        out.append((key.strip(), value))
    return tuple(out)


# --- the rules --------------------------------------------------------------------

_KEY = re.compile(r"^(?P<indent>\s*)(?P<dash>- )?(?P<key>[A-Za-z_]+):(?P<rest>.*)$")
_PLAIN_UNSAFE = re.compile(r"^[\s{\[\"'&*!|>%@`#,?:-]|: | #")


def _block_end(lines: list[str], i: int, indent: int) -> int:
    """First line after the block scalar that starts below lines[i]."""
    j = i + 1
    while j < len(lines) and (
        not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent
    ):
        j += 1
    while j > i + 1 and not lines[j - 1].strip():
        j -= 1  # trailing blank lines belong to what follows
    return j


def _labels_block(block: list[str], key_indent: int, opts: Options) -> list[str]:
    """An alert's `labels:` lines with the extra labels set (added, or replacing a value)."""
    child = " " * (key_indent + 2)
    present = {}
    for n, line in enumerate(block):
        m = _KEY.match(line)
        if m and not m.group("dash"):
            present[m.group("key")] = n
            child = m.group("indent")
    return _set_labels(list(block), present, child, opts.labels)


def _set_labels(
    lines: list[str], at: dict[str, int], indent: str, labels: Iterable[tuple[str, str]]
) -> list[str]:
    """`lines` of a YAML mapping with each label set: its line replaced (at[key]) or added."""
    for k, v in labels:
        new = f"{indent}{k}: {_yaml_scalar(v)}"
        if k in at:
            lines[at[k]] = new
        else:
            lines.append(new)
    return lines


def _with_header(text: str, opts: Options) -> str:
    """A rendered YAML file says how it was rendered (the shipped ones stay as they are)."""
    if opts.is_default:
        return text
    return f"# Rendered by qbt-vpn-watchdog-mixin {opts.describe()}\n{text}"


def render_rules(text: str, opts: Options) -> str:
    """The rule file's text with the options applied, comments and layout kept."""
    lines = text.split("\n")
    out: list[str] = []
    alert: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _KEY.match(line)
        if line.lstrip().startswith("#"):
            out.append(line)  # comments stay; the header line says what was rendered
            i += 1
            continue
        if not m:  # a continuation line of an annotation
            out.append(inject_in_text(line, opts.selector))
            i += 1
            continue
        key, rest = m.group("key"), m.group("rest")
        key_indent = len(m.group("indent")) + (2 if m.group("dash") else 0)
        head = line[: len(line) - len(rest)]
        if key == "alert":
            alert = rest.strip()
        elif key == "record":
            alert = None
        if key == "expr":
            value = rest.strip()
            if value[:1] in ("|", ">"):
                j = _block_end(lines, i, key_indent)
                out.append(line)
                out.extend(inject("\n".join(lines[i + 1 : j]), opts.selector).split("\n"))
                i = j
                continue
            new = inject(value, opts.selector)
            if new != value and _PLAIN_UNSAFE.search(new):
                new = json.dumps(new)
            out.append(line if new == value else f"{head} {new}")
        elif key == "runbook_url" and alert:
            out.append(f"{head} {json.dumps(opts.runbook_url(alert))}")
        elif key == "labels" and alert and not rest.strip():
            j = _block_end(lines, i, key_indent)
            out.append(line)
            out.extend(_labels_block(lines[i + 1 : j], key_indent, opts))
            i = j
            continue
        else:
            out.append(inject_in_text(line, opts.selector))
        i += 1
    return _with_header("\n".join(out), opts)


# --- the dashboard ------------------------------------------------------------------

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


# --- the promtool tests ------------------------------------------------------------

_SERIES = re.compile(r"^\s*([A-Za-z_:][A-Za-z0-9_:]*)?\s*(?:\{(.*)\})?\s*$", re.S)
_SERIES_LINE = re.compile(r"^(?P<head>\s*(?:- )?(?:series|labels): )(?P<value>.+?)\s*$")
_PLAIN_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def _yaml_scalar(value: str) -> str:
    """A YAML scalar for `value`: plain where YAML reads it back as this string."""
    if _PLAIN_WORD.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value)


def _unquote(value: str) -> str:
    """A YAML scalar as the test files write it: plain, 'single' or "double" quoted."""
    if value.startswith("'") and value.endswith("'"):
        return value[1:-1].replace("''", "'")
    if value.startswith('"') and value.endswith('"'):
        return json.loads(value)
    return value


def _target_labels(opts: Options) -> dict[str, str]:
    """The labels a target matching the selector carries (equality matchers only)."""
    out = {}
    for m in opts.selector:
        if m.op != "=":
            raise MixinError(
                f"rendering the promtool tests needs a selector of equality matchers only:"
                f" {m} does not say which value the test series should carry"
            )
        out[m.label] = m.text
    return out


def _relabel_series(series: str, target: dict[str, str]) -> str:
    """A test's input series as the selector's target would carry it."""
    m = _SERIES.match(series)
    if not m:
        raise MixinError(f"cannot read the test series {series!r}")
    name, body = m.group(1) or "", m.group(2) or ""
    pairs = [(x.group(1), x.group(3)) for x in _MATCHER.finditer(body)]
    if not target or ("job", json.dumps(DEFAULT_JOB)) not in pairs:
        return series  # nothing to do, or another job's series (e.g. node): left as it is
    kept = [f"{k}={v}" for k, v in pairs if k not in target]
    labels = [f"{k}={json.dumps(v)}" for k, v in target.items()] + kept
    return f"{name}{{{','.join(labels)}}}"


def _exp_labels_block(
    block: list[str], indent: str, target: dict[str, str], opts: Options
) -> list[str]:
    """An exp_labels mapping with the target's labels for the shipped job, and the extra labels."""
    out: list[str] = []
    keys: dict[str, int] = {}
    for line in block:
        m = _KEY.match(line)
        if m and m.group("key") == "job" and _unquote(m.group("rest").strip()) == DEFAULT_JOB:
            if "job" not in target:
                keys["job"] = len(out)
                out.append(line)
            for k, v in target.items():
                keys[k] = len(out)
                out.append(f"{indent}{k}: {_yaml_scalar(v)}")
            continue
        if m:
            keys[m.group("key")] = len(out)
        out.append(line)
    return _set_labels(out, keys, indent, opts.labels)


def render_tests(text: str, opts: Options) -> str:
    """One promtool test file for the rules rendered with the same options.

    Line by line, as the rules (standard library only): input series of the
    shipped job carry the selector's labels instead, expected alerts the same
    labels and the extra ones, runbook_url the pattern's URL.
    """
    target = _target_labels(opts)
    lines = text.split("\n")
    out: list[str] = []
    alert = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _KEY.match(line)
        series = _SERIES_LINE.match(line)
        if line.lstrip().startswith("#") or not line.strip():
            out.append(line)
        elif series:
            value = _unquote(series.group("value"))
            new = _relabel_series(value, target)
            if new == value:
                out.append(line)
            else:
                safe = not _PLAIN_UNSAFE.search(new)
                out.append(series.group("head") + (new if safe else json.dumps(new)))
        elif m and m.group("key") == "alertname":
            alert = _unquote(m.group("rest").strip())
            out.append(line)
        elif m and m.group("key") == "exp_labels" and not m.group("rest").strip():
            key_indent = len(m.group("indent")) + (2 if m.group("dash") else 0)
            j = _block_end(lines, i, key_indent)
            block = lines[i + 1 : j]
            child = _KEY.match(block[0]).group("indent") if block else " " * (key_indent + 2)
            out.append(line)
            out.extend(_exp_labels_block(block, child, target, opts))
            i = j
            continue
        elif m and m.group("key") == "runbook_url" and alert:
            value = _unquote(m.group("rest").strip())
            url = opts.runbook_url(alert)
            head = line[: len(line) - len(m.group("rest"))]
            out.append(line if value == url else f"{head} {json.dumps(url)}")
        elif m and m.group("key") == "expr":
            value = m.group("rest").strip()
            new = inject(_unquote(value), opts.selector)
            head = line[: len(line) - len(m.group("rest"))]
            out.append(line if new == _unquote(value) else f"{head} {json.dumps(new)}")
        else:
            out.append(inject_in_text(line, opts.selector))
        i += 1
    return _with_header("\n".join(out), opts)


# --- the files ------------------------------------------------------------------------


def source_root() -> Path:
    """The folder holding alerts/, dashboards/ and docs/runbook.md.

    A checkout (or an editable install) has them beside watchdog/; the wheel
    and the Nix package install them under <prefix>/share/qbt-vpn-watchdog/,
    where <prefix> holds lib/pythonX.Y/site-packages/qbt_vpn_watchdog/.
    """
    here = Path(__file__).resolve().parent
    candidates = [here.parent.parent, here.parents[3] / SHARE]
    candidates.append(Path(sys.prefix) / SHARE)
    for root in candidates:
        if (root / RULES_NAME).is_file():
            return root
    raise MixinError(
        "cannot find the mixin's files (alerts/qbt-vpn-watchdog.rules.yml) in "
        + ", ".join(map(str, candidates))
        + ": give --source DIR"
    )


def rule_test_files(root: Path) -> list[Path]:
    return sorted((root / TESTS_DIR).glob("*.yml"))


def render_all(root: Path, opts: Options) -> dict[str, str]:
    """Every file of the mixin, rendered: {relative path: text}."""
    out = {
        RULES_NAME: render_rules((root / RULES_NAME).read_text(encoding="utf-8"), opts),
        DASHBOARD_NAME: render_dashboard((root / DASHBOARD_NAME).read_text(encoding="utf-8"), opts),
    }
    for path in rule_test_files(root):
        rel = f"{TESTS_DIR}/{path.name}"
        out[rel] = render_tests(path.read_text(encoding="utf-8"), opts)
    # Copied as they are: the runbook (the default runbook_url points into it
    # relative to this folder) and the Alertmanager example.
    for rel in (ALERTMANAGER_NAME, RUNBOOK_NAME):
        if (root / rel).is_file():
            out[rel] = (root / rel).read_text(encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="qbt-vpn-watchdog-mixin",
        description="Render the alert rules, their promtool tests and the Grafana dashboard "
        "for your Prometheus (selector, runbook URL, labels).",
        epilog="Without --out the rules go to stdout (--dashboard: the dashboard). "
        "With no option the output is the shipped files exactly.",
    )
    p.add_argument(
        "--selector", "--job-selector", dest="selector", default="",
        help='label matchers put into every query, e.g. \'job="torrent-box", env="prod"\'; '
        "a matcher on a label it names replaces the shipped one (default: none; the shipped "
        f'rules select Prometheus\'s `up` with job="{DEFAULT_JOB}")',
    )  # fmt: skip
    p.add_argument(
        "--runbook-url-pattern", default=DEFAULT_RUNBOOK_URL_PATTERN,
        help="every alert's runbook_url; %%s = the alert name lowercased (default "
        f"{DEFAULT_RUNBOOK_URL_PATTERN.replace('%', '%%')}, relative to the folder of the "
        "shipped files)",
    )  # fmt: skip
    p.add_argument(
        "--label", action="append", default=[], metavar="NAME=VALUE",
        help="a label added to every alert (repeatable), e.g. team=media",
    )  # fmt: skip
    p.add_argument("--source", type=Path, help="the folder holding the shipped files")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--out",
        type=Path,
        help="write every file (rules, tests, dashboard, runbook) under this folder",
    )
    what.add_argument("--dashboard", action="store_true", help="print the dashboard, not the rules")
    args = p.parse_args(argv)
    try:
        opts = Options(
            selector=parse_selector(args.selector),
            runbook_url_pattern=args.runbook_url_pattern,
            labels=parse_labels(args.label),
        )
        root = args.source or source_root()
        if args.out:
            files = render_all(root, opts)
            for rel, text in files.items():
                dest = args.out / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(text, encoding="utf-8")
            print(f"wrote {len(files)} files under {args.out}", file=sys.stderr)
        elif args.dashboard:
            sys.stdout.write(
                render_dashboard((root / DASHBOARD_NAME).read_text(encoding="utf-8"), opts)
            )
        else:
            sys.stdout.write(render_rules((root / RULES_NAME).read_text(encoding="utf-8"), opts))
    except (MixinError, OSError) as e:
        print(f"qbt-vpn-watchdog-mixin: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
