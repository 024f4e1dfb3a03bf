"""Reading PromQL well enough to put a selector into every vector selector (see the package doc)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

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
