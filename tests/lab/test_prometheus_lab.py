"""The alerts and the dashboard against the real thing.

A real Prometheus (Debian's package) scrapes the real watchdog daemon running
against the lab, evaluating the shipped rules; a real Alertmanager (Debian's
package) routes with the shipped config to a webhook receiver run by the test.
Everything listens on 127.0.0.1 only; Alertmanager clustering is off.

Test-time changes, and only these: the rules' ``for:`` durations are divided
by ``FOR_SCALE`` (2 m -> 10 s); Prometheus scrapes and evaluates every 1 s;
Alertmanager's group_wait/group_interval are 1 s/2 s; the receivers' URLs
point at the test's webhook; the daemon runs in mode "observe" so that its
own remediation does not change the fault under test. Everything else
(expressions, labels, annotations, routes, inhibitions) is the shipped text.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from tests.support.monitoring import (
    ALERTMANAGER,
    JOB,
    alert_rules,
    dashboard_queries,
    duration_seconds,
    free_port,
    grafana_to_promql,
    load_dashboard,
    load_rules,
    metric_names,
    recording_rules,
    selectors,
)
from tests.support.procs import Proc, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.root]

FOR_SCALE = 12  # shipped for: / 12 -> 2 m becomes 10 s, 1 m 5 s, 30 m 150 s
PROMETHEUS = "prometheus"
ALERTMANAGER_BIN = "prometheus-alertmanager"
# Dashboard queries that are empty until the watchdog has acted at least once
# (the counters get an `action` label only when an action is taken). Their
# metric names are still proven exposed by the target metadata test.
EVENT_QUERIES = ("qbtvpn_remediations_total", "qbtvpn_remediation_failures_total")

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


def get_json(url: str, timeout: float = 5) -> object:
    with _OPENER.open(url, timeout=timeout) as r:
        return json.load(r)


def ready(url: str) -> bool:
    try:
        with _OPENER.open(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


# --- the daemon ---------------------------------------------------------------


def watchdog_config(lab_config: Path, out: Path, port: int) -> Path:
    text = lab_config.read_text()
    text = re.sub(r"(?m)^listen_port = \d+$", f"listen_port = {port}", text)
    text = re.sub(r'(?m)^mode = "\w+"$', 'mode = "observe"', text)
    assert f"listen_port = {port}" in text and 'mode = "observe"' in text
    out.write_text(text)
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("qva-prom")


@pytest.fixture(scope="module")
def watchdog(lab, workdir):
    port = free_port()
    cfg = watchdog_config(lab.config_path, workdir / "watchdog.toml", port)
    proc = Proc([sys.executable, "-m", "qbt_vpn_watchdog", "run", "--config", str(cfg)], workdir / "wd.log")
    try:
        wait_for(
            "the watchdog's /metrics",
            lambda: ready(f"http://127.0.0.1:{port}/metrics") or not proc.alive(),
            30,
        )
        assert proc.alive(), proc.tail()
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


# --- the webhook receiver ---------------------------------------------------------


class Webhook:
    """Alertmanager's webhook receiver: records every notification it gets."""

    def __init__(self) -> None:
        self.notifications: list[tuple[float, str, dict]] = []  # (monotonic, path, body)
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook._lock:
                    hook.notifications.append((time.monotonic(), self.path, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, alertname: str | None = None, status: str | None = None):
        """(time, receiver path, alert) of every alert in every notification received."""
        with self._lock:
            got = list(self.notifications)
        return [
            (t, path, a)
            for t, path, body in got
            for a in body["alerts"]
            if (alertname is None or a["labels"]["alertname"] == alertname)
            and (status is None or a["status"] == status)
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- Alertmanager and Prometheus ------------------------------------------------


def alertmanager_config_for_test(path: Path, webhook: str) -> Path:
    cfg = yaml.safe_load(ALERTMANAGER.read_text())
    for rcv in cfg["receivers"]:
        for hook in rcv.get("webhook_configs", []):
            hook["url"] = f"{webhook}/{rcv['name']}"
    for route in [cfg["route"], *cfg["route"].get("routes", [])]:
        route["group_wait"], route["group_interval"] = "1s", "2s"
        # repeat_interval is the shipped one (>= 1 h): "arrives once" means it.
    path.write_text(yaml.safe_dump(cfg))
    return path


def rules_for_test(path: Path) -> Path:
    rules = load_rules()
    for g in rules["groups"]:
        g["interval"] = "1s"
        for r in g["rules"]:
            if "for" in r:
                r["for"] = f"{duration_seconds(r['for']) / FOR_SCALE:g}s"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def webhook():
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


@pytest.fixture(scope="module")
def alertmanager(workdir, webhook):
    port = free_port()
    cfg = alertmanager_config_for_test(workdir / "alertmanager.yml", webhook.url)
    proc = Proc(
        [ALERTMANAGER_BIN, f"--config.file={cfg}", f"--storage.path={workdir / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
         "--log.level=warn"],
        workdir / "alertmanager.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("alertmanager", lambda: ready(f"{url}/-/ready") or not proc.alive(), 20)
        assert proc.alive(), proc.tail()
        yield url
    finally:
        proc.stop()


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict]:
        q = urllib.parse.urlencode({"query": expr})
        body = get_json(f"{self.url}/api/v1/query?{q}")
        assert body["status"] == "success", body
        return body["data"]["result"]

    def alerts(self) -> list[dict]:
        return get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"]

    def state(self) -> str:
        """What the watchdog reports and what Prometheus has active, for failure messages."""
        reasons = sorted(
            f"{r['metric']['check']}={r['metric']['reason']}"
            for r in self.query("qbtvpn_check_reason == 1")
        )
        active = sorted(f"{a['labels']['alertname']}:{a['state']}" for a in self.alerts())
        return f"checks: {reasons}\nalerts: {active}"

    def firing(self, alertname: str) -> list[dict]:
        return [
            a
            for a in self.alerts()
            if a["labels"]["alertname"] == alertname and a["state"] == "firing"
        ]


@pytest.fixture(scope="module")
def prometheus(workdir, watchdog, alertmanager):
    port = free_port()
    rules = rules_for_test(workdir / "rules.yml")
    am_target = alertmanager.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [am_target]}]}]},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [watchdog]}]}],
    }
    cfg = workdir / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config))
    proc = Proc(
        [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        workdir / "prometheus.log",
    )  # fmt: skip
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:
        wait_for("prometheus", lambda: ready(f"{prom.url}/-/ready") or not proc.alive(), 30)
        assert proc.alive(), proc.tail()
        # Enough samples for every rate() and the recording rules.
        wait_for(
            "15 s of scraped cycles",
            lambda: prom.query(f'count_over_time(up{{job="{JOB}"}}[1m]) >= 15'),
            60,
            step=1,
        )
        yield prom
    finally:
        proc.stop()


# --- every query returns data ---------------------------------------------------


def test_every_metric_named_anywhere_is_exposed_by_the_daemon(prometheus):
    # HELP/TYPE lines count even before a series has samples (the counters of
    # actions not taken yet): a misspelt name has no metadata at all.
    q = urllib.parse.urlencode({"match_target": f'{{job="{JOB}"}}'})
    meta = get_json(f"{prometheus.url}/api/v1/targets/metadata?{q}")["data"]
    exposed = {m["metric"] for m in meta}
    # Family names as the metadata has them: counters without _total (newer
    # clients), and info families without _info once Prometheus scrapes
    # OpenMetrics (its series are still named ..._info).
    exposed |= {n + suffix for n in exposed for suffix in ("_total", "_info")}
    recorded = {r["record"] for r in recording_rules()}
    used = set()
    for _, expr in dashboard_queries(load_dashboard()):
        used |= metric_names(expr)
    for rule in recording_rules() + alert_rules():
        used |= metric_names(rule["expr"])
    missing = sorted(used - exposed - recorded - {"up"})
    assert not missing, f"named by a panel or rule, not exposed by the daemon: {missing}"


def test_every_dashboard_query_returns_data(prometheus):
    empty = []
    for where, expr in dashboard_queries(load_dashboard()):
        if any(name in expr for name in EVENT_QUERIES):
            continue
        if not prometheus.query(grafana_to_promql(expr)):
            empty.append(f"{where}: {expr}")
    assert not empty, "empty panels in a healthy lab:\n" + "\n".join(empty)


def test_every_recording_rule_records_data(prometheus):
    for rule in recording_rules():
        assert prometheus.query(rule["record"]), f"{rule['record']} recorded nothing"
        assert prometheus.query(rule["expr"]), rule["expr"]


def test_every_selector_of_every_alert_finds_series(prometheus):
    # An alert expression is empty while healthy, so ask for what it reads: each
    # selector must match series, or the alert could never fire.
    missing = []
    for rule in alert_rules():
        for sel in selectors(rule["expr"]):
            text = sel.name + "{" + ",".join(f'{k}{op}"{v}"' for k, op, v in sel.matchers) + "}"
            if not prometheus.query(text):
                missing.append(f"{rule['alert']}: {text}")
    assert not missing, "selectors that match nothing:\n" + "\n".join(missing)


def test_a_healthy_lab_raises_no_alert(prometheus):
    active = [(a["labels"]["alertname"], a["state"]) for a in prometheus.alerts()]
    assert not active, f"alerts in a healthy lab: {active}\n{prometheus.state()}"


# --- end to end: the 92-byte failure pages once ------------------------------------


def test_return_path_fault_pages_once_inhibits_the_rest_and_heals(
    healed_lab, prometheus, alertmanager, webhook
):
    assert not webhook.alerts(), "notifications before the fault"
    t0 = time.monotonic()
    healed_lab.break_("return-path")

    # The page arrives, on the pager route.
    wait_for(
        "QbtVpnReturnPathDown at the receiver",
        lambda: webhook.alerts("QbtVpnReturnPathDown", "firing"),
        120,
        diag=lambda: f"{prometheus.state()}\nreceived: {webhook.alerts()}",
    )
    arrived = time.monotonic() - t0
    [(when, path, alert)] = webhook.alerts("QbtVpnReturnPathDown", "firing")
    assert path == "/pager"
    assert alert["labels"]["severity"] == "critical" and alert["labels"]["check"] == "return_path"
    assert alert["annotations"]["runbook_url"].endswith("#qbtvpnreturnpathdown")

    # What it causes stays quiet: QbtVpnDnsFailing's rule is silent while
    # return_path fails (DNS fails first, an inhibition would come too late),
    # and nothing else reaches a receiver.
    assert prometheus.query('qbtvpn_check_success{check="dns"} == 0'), prometheus.state()
    time.sleep(6)  # three group intervals: anything sendable would have been sent
    assert not prometheus.firing("QbtVpnDnsFailing"), prometheus.state()
    assert len(webhook.alerts("QbtVpnReturnPathDown", "firing")) == 1, "paged more than once"
    others = {a["labels"]["alertname"] for _, _, a in webhook.alerts()} - {"QbtVpnReturnPathDown"}
    assert not others, f"notified besides QbtVpnReturnPathDown: {others}\n" + "\n".join(
        f"  +{when - t0:.1f} s {path} {a['labels']['alertname']} {a['status']} "
        f"startsAt {a['startsAt']}"
        for when, path, a in webhook.alerts()
    )

    # Heal: the alert resolves at the receiver.
    t1 = time.monotonic()
    healed_lab.heal("return-path")
    wait_for(
        "QbtVpnReturnPathDown resolved at the receiver",
        lambda: webhook.alerts("QbtVpnReturnPathDown", "resolved"),
        120,
        diag=prometheus.state,
    )
    resolved = time.monotonic() - t1
    print(
        f"\nreturn-path: fault -> page {arrived:.1f} s; heal -> resolved {resolved:.1f} s "
        f"(for: scaled 1/{FOR_SCALE}, scrape/eval 1 s, group_wait 1 s)"
    )
