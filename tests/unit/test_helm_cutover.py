"""The chart's side of the owner-by-owner cutover: alerts and a dashboard row on the metrics MigratingRedis exports
from the application's pods (and the appliers' fence), rendered with the Helm SDK as in test_helm.py."""

from __future__ import annotations

import json
import re

import pytest

from tests.unit.test_helm import CHART, PRODUCTION, of_kind, render

CUTOVER_ALERTS = {
    "ReplicatorShadowMismatch": "replicator_shadow_reads_total",
    "ReplicatorCutoverMirrorFailures": "replicator_cutover_mirror_failures_total",
    "ReplicatorCutoverHoldSlow": "replicator_cutover_hold_seconds_bucket",
}
RULES_ON = {"metrics": {"prometheusRule": {"enabled": True}}}
MATCHER = re.compile(r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"[^"]*"\s*')


def alerts(values: dict) -> dict[str, dict]:
    (rule,) = of_kind(render(values), "PrometheusRule")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def assert_promql_like(expr: str) -> None:
    """No PromQL parser here: brackets balance, selectors are label matchers, ranges are durations, and the
    expression ends in a comparison with a number (what an alert needs); no template text is left over."""
    assert "{{" not in expr and "}}" not in expr and "<no value>" not in expr, expr
    stack = []
    for char in expr:
        if char in "([{":
            stack.append(char)
        elif char in ")]}":
            assert stack and stack.pop() + char in ("()", "[]", "{}"), expr
    assert not stack, expr
    for selector in re.findall(r"\b[a-z_]+\{([^}]*)\}", expr):
        assert all(MATCHER.fullmatch(m) for m in selector.split(",")), f"{selector!r} in {expr!r}"
    for window in re.findall(r"\[([^\]]*)\]", expr):
        assert re.fullmatch(r"\d+[smhdw]", window), expr
    assert re.search(r"\)\s*(>|>=|<|<=|==|!=)\s*\d+(\.\d+)?$", expr), expr


@pytest.mark.parametrize("values", [RULES_ON, PRODUCTION], ids=["rules-on", "production"])
def test_cutover_alerts_render_by_default_on_the_metrics_migratingredis_exports(values):
    rules = alerts(values)
    assert set(CUTOVER_ALERTS) <= set(rules)
    for name, metric in CUTOVER_ALERTS.items():
        rule = rules[name]
        assert_promql_like(rule["expr"])
        assert re.search(rf"\b{metric}\b", rule["expr"]), rule["expr"]
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert 'result="mismatch"' in rules["ReplicatorShadowMismatch"]["expr"]
    assert "histogram_quantile(0.99," in rules["ReplicatorCutoverHoldSlow"]["expr"]
    assert rules["ReplicatorCutoverHoldSlow"]["expr"].endswith("> 5")
    # The descriptions say what to do.
    assert "replicator verify" in rules["ReplicatorShadowMismatch"]["annotations"]["description"]
    assert "replicator verify --switched" in rules["ReplicatorCutoverMirrorFailures"]["annotations"]["description"]
    assert "replicator cutover status" in rules["ReplicatorCutoverHoldSlow"]["annotations"]["description"]


def test_cutover_alerts_go_with_their_flag_and_leave_the_others():
    on = alerts(RULES_ON)
    off = alerts({"metrics": {"prometheusRule": {"enabled": True, "cutover": {"enabled": False}}}})
    assert not set(CUTOVER_ALERTS) & set(off)
    assert set(off) == set(on) - set(CUTOVER_ALERTS) and "ReplicatorConsumerLagHigh" in off


def test_the_cutover_selector_picks_the_applications_series_and_the_threshold_is_a_value():
    """The metrics come from the application's pods, seldom in the replicator's namespace: no namespace matcher by
    default, the selector's when one is given."""
    assert all("namespace=" not in alerts(RULES_ON)[name]["expr"] for name in CUTOVER_ALERTS)
    rules = alerts({"metrics": {"prometheusRule": {"enabled": True, "cutover": {
        "selector": 'namespace="messaging", job=~"api.*"', "holdP99Seconds": 2.5}}}})
    for name in CUTOVER_ALERTS:
        expr = rules[name]["expr"]
        assert_promql_like(expr)
        selectors = re.findall(r"\breplicator_[a-z_]+\{([^}]*)\}", expr)
        assert selectors and all('namespace="messaging", job=~"api.*"' in s for s in selectors), expr
    assert rules["ReplicatorCutoverHoldSlow"]["expr"].endswith("> 2.5")
    values_text = (CHART / "values.yaml").read_text()
    assert "MigratingRedis" in values_text and "application" in values_text


def test_the_dashboard_has_a_cutover_row_on_every_cutover_metric():
    docs = render(PRODUCTION)
    (dashboard_map,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard")]
    panels = json.loads(dashboard_map["data"]["redis-dynamodb-replicator.json"])["panels"]
    (row,) = [p for p in panels if p["type"] == "row" and p["title"] == "Cutover"]
    # An open row's panels follow it (up to the next row); a collapsed one holds them.
    start = panels.index(row) + 1
    end = next((i for i in range(start, len(panels)) if panels[i]["type"] == "row"), len(panels))
    in_row = row.get("panels") or panels[start:end]
    assert in_row and all(p["gridPos"]["y"] > row["gridPos"]["y"] for p in in_row)
    exprs = [t["expr"] for p in in_row for t in p["targets"]]
    assert all(e and "replicator_" in e for e in exprs)

    def panel_with(*parts: str) -> dict:
        found = [p for p in in_row if any(all(x in t["expr"] for x in parts) for t in p["targets"])]
        assert found, f"no panel of the Cutover row queries {parts}"
        return found[0]

    assert "by (result)" in panel_with("rate(replicator_shadow_reads_total")["targets"][0]["expr"]
    panel_with("replicator_shadow_reads_total", 'result="mismatch"')
    hold = panel_with("replicator_cutover_hold_seconds_bucket", "histogram_quantile(0.5,")
    assert any("histogram_quantile(0.99," in t["expr"] for t in hold["targets"])
    panel_with("replicator_cutover_mirror_failures_total")
    panel_with("rate(replicator_events_applied_total", 'result="switched"')
