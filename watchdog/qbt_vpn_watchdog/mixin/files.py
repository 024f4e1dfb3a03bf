"""The shipped files: where they are, all of them rendered, and the command (``main``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qbt_vpn_watchdog.mixin.dashboard import render_dashboard
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
    MixinError,
    parse_selector,
)
from qbt_vpn_watchdog.mixin.rules import render_rules, render_tests


def source_root() -> Path:
    """The folder holding alerts/, dashboards/ and docs/runbook.md.

    A checkout (or an editable install) has them beside watchdog/; the wheel
    and the Nix package install them under <prefix>/share/qbt-vpn-watchdog/,
    where <prefix> holds lib/pythonX.Y/site-packages/qbt_vpn_watchdog/.
    """
    here = Path(__file__).resolve().parent.parent  # the package's folder, above mixin/
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
