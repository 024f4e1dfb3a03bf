"""Render the alert rules (and with --out the promtool tests, the dashboard and the runbook)
for your Prometheus, from a checkout:

    python3 alerts/render.py --selector 'job="torrent-box"' > qbt-vpn-watchdog.rules.yml

The same program as `qbt-vpn-watchdog-mixin` (qbt_vpn_watchdog/mixin/), which
the wheel and the Nix package install; see docs/alerting.md. Standard library
only, so it runs wherever Prometheus's configuration is built; --job-selector
is the old name of --selector.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "watchdog"))

from qbt_vpn_watchdog.mixin import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
