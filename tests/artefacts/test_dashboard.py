"""The Grafana dashboard: classic JSON model, one datasource variable used by
every panel, job and instance variables in every query, and only catalogued metrics."""

from __future__ import annotations

import shutil

import pytest

from tests.support.monitoring import (
    JOB,
    RUNBOOK_BASE,
    dashboard_queries,
    grafana_to_promql,
    load_dashboard,
    metric_names,
    problems,
    promtool_check_exprs,
    recording_rules,
    selectors,
)

DS = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def dash():
    return load_dashboard()


def _panels(dash):
    return [p for p in dash["panels"] if p["type"] != "row"]


def test_classic_model_with_a_stable_uid(dash):
    assert dash["uid"] == "qbt-vpn-watchdog"
    assert dash["schemaVersion"] >= 36
    assert dash["id"] is None  # so an import never overwrites another dashboard by id
    assert dash["title"]
    assert not dash.get("__inputs"), "a datasource variable, not an import-time input"
    assert any(link["url"] == RUNBOOK_BASE for link in dash["links"])


def test_datasource_job_and_instance_variables(dash):
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance"]
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("job", "instance"):
        v = variables[name]
        assert v["type"] == "query" and v["multi"] and v["includeAll"], name
        assert v["datasource"] == DS, name
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        assert query == v["definition"], name
    # Jobs are found by the watchdog's own series, whatever the job is called;
    # "All" expands to the jobs found, never to every job Prometheus has.
    assert variables["job"]["definition"] == "label_values(qbtvpn_build_info, job)"
    assert "allValue" not in variables["job"]
    assert variables["instance"]["definition"] == 'label_values(up{job=~"$job"}, instance)'
    for where, expr in dashboard_queries(dash):
        assert f'job="{JOB}"' not in expr, f"{where}: the job is the $job variable"


def test_no_deprecated_keys_and_rate_windows_follow_the_scrape(dash):
    # "style" went with Grafana's theme per dashboard; $__interval can be
    # shorter than two scrapes, where rate() and increase() return nothing.
    assert "style" not in dash
    for where, expr in dashboard_queries(dash):
        assert "[$__interval]" not in expr, where
    for a in dash["annotations"]["list"]:
        assert "[$__interval]" not in a.get("expr", "")


def test_every_panel_and_target_uses_the_datasource_variable(dash):
    for p in _panels(dash):
        assert p["datasource"] == DS, p["title"]
        assert p["targets"], f"{p['title']} has no query"
        for t in p["targets"]:
            assert t["datasource"] == DS, (p["title"], t["refId"])
            assert t["expr"].strip(), (p["title"], t["refId"])
    for a in dash["annotations"]["list"]:
        if not a.get("builtIn"):
            assert a["datasource"] == DS, a["name"]


def test_every_selector_is_restricted_to_the_instance_variable(dash):
    for where, expr in dashboard_queries(dash):
        sels = selectors(expr)
        assert sels, f"{where}: no selector with labels in {expr!r}"
        unrestricted = metric_names(expr) - {sel.name for sel in sels}
        assert not unrestricted, f"{where}: {sorted(unrestricted)} without label matchers"
        for sel in sels:
            assert ("instance", "=~", "$instance") in sel.matchers, (
                f"{where}: {sel.name} ignores $instance"
            )
            assert ("job", "=~", "$job") in sel.matchers, f"{where}: {sel.name} ignores $job"


def test_every_metric_on_the_dashboard_is_in_the_catalogue(dash):
    found = [f"{where}: {p}" for where, expr in dashboard_queries(dash) for p in problems(expr)]
    assert not found, "\n".join(found)


def test_dashboard_works_without_the_recording_rules(dash):
    recorded = {r["record"] for r in recording_rules()}
    for where, expr in dashboard_queries(dash):
        assert not metric_names(expr) & recorded, f"{where} needs the rule file loaded"


def test_the_catalogue_check_would_catch_a_typo_on_the_dashboard(dash):
    expr = dash["panels"][1]["targets"][0]["expr"]
    assert not problems(expr)
    assert problems(expr.replace("qbtvpn_check_success", "qbtvpn_check_sucess"))


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed")
def test_every_query_is_valid_promql(dash, tmp_path):
    exprs = [grafana_to_promql(expr) for _, expr in dashboard_queries(dash)]
    r = promtool_check_exprs(exprs, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_required_panels_are_there(dash):
    used = set().union(*(metric_names(e) for _, e in dashboard_queries(dash)))
    for metric in (
        "qbtvpn_check_success",  # health of every check
        "qbtvpn_check_reason",
        "qbtvpn_wireguard_peer_receive_bytes_total",  # wire rx/tx: the asymmetry
        "qbtvpn_wireguard_peer_transmit_bytes_total",
        "qbtvpn_interface_receive_bytes_total",  # inner rx/tx
        "qbtvpn_interface_transmit_bytes_total",
        "qbtvpn_wireguard_peer_last_handshake_timestamp_seconds",  # handshake age
        "qbtvpn_path_mtu_bytes",  # the path MTU against the tunnel's: a black hole
        "qbtvpn_tunnel_mtu_bytes",
        "qbtvpn_dns_lookup_duration_seconds",
        "qbtvpn_exit_ip_info",
        "qbtvpn_exit_ip_airvpn",
        "qbtvpn_qbittorrent_connection_status",
        "qbtvpn_qbittorrent_download_speed_bytes_per_second",
        "qbtvpn_qbittorrent_upload_speed_bytes_per_second",
        "qbtvpn_torrents_held_stopped",
        "qbtvpn_remediations_total",  # timeline of remediations
        "qbtvpn_remediation_state",
        "qbtvpn_remediation_mode",  # observe mode must be visible where the state is
    ):
        assert metric in used, f"no panel shows {metric}"
    handshake = [e for _, e in dashboard_queries(dash) if "last_handshake" in e]
    assert any(e.replace(" ", "").startswith("time()-") for e in handshake), (
        "handshake age = time() - ts"
    )
    assert any(
        a.get("expr") and "qbtvpn_remediations_total" in a["expr"]
        for a in dash["annotations"]["list"]
    ), "remediations as annotations"


def test_panel_ids_unique_and_layout_fits(dash):
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))
