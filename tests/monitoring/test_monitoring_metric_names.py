"""Every metric the rules and dashboards use exists in fleet/observability/metrics.py (or is recorded)."""

from __future__ import annotations

import re

import pytest

from fleet.observability.catalog import exposed_sample_names
from tests.monitoring.promql_names import (
    PROMETHEUS_BUILTINS,
    ROOT,
    alerts,
    dashboard_exprs,
    metric_names,
    recorded_names,
    rules,
)

KNOWN = exposed_sample_names() | PROMETHEUS_BUILTINS


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            "sum by (school, direction) (rate(labfleet_school_bytes_total[1m]))",
            {"labfleet_school_bytes_total"},
        ),
        ('max by (school) (x:y:z{school=~"$school"}) * 8 / on (school) (a_b > 0)', {"x:y:z", "a_b"}),
        (
            "topk by (school) (1, labfleet_school_current_period) offset 1h",
            {"labfleet_school_current_period"},
        ),
        ('histogram_quantile(0.99, sum by (instance, le) (rate(h_bucket{le="+Inf"}[5m])))', {"h_bucket"}),
        ("a and on (school) b unless ignoring (x) c or d == bool 1e6", {"a", "b", "c", "d"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
    ],
)
def test_metric_name_extraction(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def test_every_metric_in_the_rules_is_defined_or_recorded() -> None:
    recorded = recorded_names()
    missing = {}
    for rule in rules():
        unknown = metric_names(rule["expr"]) - KNOWN - recorded
        if unknown:
            missing[rule.get("record") or rule.get("alert")] = sorted(unknown)
    assert missing == {}


def test_every_metric_in_the_dashboards_is_defined_or_recorded() -> None:
    recorded = recorded_names()
    missing = {where: sorted(metric_names(expr) - KNOWN - recorded) for where, expr in dashboard_exprs()}
    assert {k: v for k, v in missing.items() if v} == {}


def test_dashboards_and_rules_reference_metrics_at_all() -> None:
    # Guards the name extraction against silently returning nothing.
    used = set().union(*(metric_names(e) for _, e in dashboard_exprs()))
    assert {
        "labfleet_devices_online",
        "school:uplink_utilisation:ratio",
        "labfleet_ingest_lag_seconds",
    } <= used


def test_recording_rule_names_follow_level_metric_operations() -> None:
    for name in recorded_names():
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", name), name
        assert not name.startswith("labfleet_"), name


def test_every_alert_has_severity_summary_and_runbook() -> None:
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        ann = alert["annotations"]
        assert ann["summary"] and ann["description"] and ann["runbook"], name
        assert ann["runbook_url"] == f"docs/runbooks.md#{name.lower()}", name
        assert f"\n## {name}\n" in runbooks, name
