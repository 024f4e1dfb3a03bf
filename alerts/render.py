"""Print the alert rules for a Prometheus whose scrape job for the watchdog has another name.

    python3 alerts/render.py --job-selector 'job="torrent-box"' > qbt-vpn-watchdog.rules.yml

The shipped qbt-vpn-watchdog.rules.yml is this script's output for the default
selector, job="qbt-vpn-watchdog" (a test keeps it so). Only Prometheus's own
`up` series need the selector; the watchdog's qbtvpn_* series are found by
name. The selector is the inside of PromQL braces: one or more label matchers,
e.g. 'job="torrent-box"' or 'job=~"torrent-.*", env="prod"'. Standard library
only, so it runs wherever Prometheus's config is built.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

RULES = Path(__file__).resolve().with_name("qbt-vpn-watchdog.rules.yml")
DEFAULT_SELECTOR = 'job="qbt-vpn-watchdog"'
_MATCHER = r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
_SELECTOR = re.compile(rf"{_MATCHER}(?:,{_MATCHER})*")


def render(selector: str = DEFAULT_SELECTOR) -> str:
    """The rules with every ``job="qbt-vpn-watchdog"`` replaced by ``selector``."""
    if not _SELECTOR.fullmatch(selector):
        raise ValueError(
            f"--job-selector {selector!r}: expected label matchers as inside PromQL braces,"
            ' e.g. job="torrent-box"'
        )
    text = RULES.read_text(encoding="utf-8")
    return text.replace(DEFAULT_SELECTOR, selector.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--job-selector",
        default=DEFAULT_SELECTOR,
        help=f"label matchers that select the watchdog's `up` series (default {DEFAULT_SELECTOR})",
    )
    args = p.parse_args(argv)
    try:
        sys.stdout.write(render(args.job_selector))
    except ValueError as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
