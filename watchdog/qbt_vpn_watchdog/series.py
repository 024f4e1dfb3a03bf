"""What a series is: its name, type, help and labels, and the family that renders it.

The catalogue (``qbt_vpn_watchdog.metrics.CATALOGUE``) is built from these: the
watchdog's own series in metrics.py, and each check's series declared in the
check's own file (``register(..., series=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

PREFIX = "qbtvpn_"


@dataclass(frozen=True)
class Metric:
    name: str  # full name, including PREFIX (and _total for counters, _info for info)
    type: str  # "gauge" | "counter" | "info"
    help: str
    labels: tuple[str, ...] = ()

    def family(self, labels: tuple[str, ...] | None = None):
        """An empty prometheus_client family for this series, to add samples to."""
        if labels is None:
            labels = self.labels
        if self.type == "gauge":
            return GaugeMetricFamily(self.name, self.help, labels=labels)
        if self.type == "counter":
            return CounterMetricFamily(self.name, self.help, labels=labels)
        # Info families are named without "_info"; the exposition adds it back.
        return InfoMetricFamily(self.name.removesuffix("_info"), self.help)


def metric(name: str, type_: str, help_: str, *labels: str) -> Metric:
    """A series named ``qbtvpn_<name>``."""
    return Metric(PREFIX + name, type_, help_, tuple(labels))


def flag(v: bool) -> float:
    return 1.0 if v else 0.0
