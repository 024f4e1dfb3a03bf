"""The alert rules and their promtool tests, rewritten line by line (comments and layout kept)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from qbt_vpn_watchdog.mixin.options import (
    DEFAULT_JOB,
    Options,
)
from qbt_vpn_watchdog.mixin.promql import (
    _MATCHER,
    MixinError,
    inject,
    inject_in_text,
)

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
