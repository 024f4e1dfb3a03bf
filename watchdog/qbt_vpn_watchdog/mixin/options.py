"""The shipped files' names and what the user asks for (selector, runbook URL pattern, labels)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from qbt_vpn_watchdog.mixin.promql import _LABEL, Matcher, MixinError

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
