"""The provisioned Grafana dashboards are well-formed dashboard JSON and the provisioning files agree."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.monitoring.promql_names import DASHBOARDS, GRAFANA_DIR, load_dashboards, panels

PANEL_TYPES = {
    "row",
    "stat",
    "timeseries",
    "heatmap",
    "table",
    "gauge",
    "bargauge",
    "state-timeline",
    "status-history",
    "text",
    "piechart",
    "barchart",
}
GRID_COLUMNS = 24  # Grafana's grid is 24 columns wide
BUILTIN_VARS = {"__interval", "__rate_interval", "__range", "__interval_ms", "__range_s"}
EXPECTED = {"labfleet-district-overview.json", "labfleet-school.json", "labfleet-fleet-health.json"}


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return load_dashboards()


def test_the_three_dashboards_exist(dashboards: dict[str, dict[str, Any]]) -> None:
    assert set(dashboards) == EXPECTED


def test_dashboard_top_level_fields(dashboards: dict[str, dict[str, Any]]) -> None:
    uids = set()
    for name, d in dashboards.items():
        assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36, name
        assert (
            isinstance(d["uid"], str) and 0 < len(d["uid"]) <= 40 and re.fullmatch(r"[a-z0-9-]+", d["uid"])
        ), name
        assert d["uid"] not in uids, name
        uids.add(d["uid"])
        assert d["title"].startswith("LabFleet"), name
        assert "id" not in d or d["id"] is None, f"{name}: provisioned dashboards must not pin a numeric id"
        assert {"from", "to"} <= set(d["time"]), name
        assert isinstance(d["panels"], list) and d["panels"], name
        assert isinstance(d["templating"]["list"], list), name
        assert "labfleet" in d["tags"], name


def test_panels_have_type_grid_position_and_unique_ids(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, d in dashboards.items():
        ids = [p["id"] for p in panels(d)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        assert all(isinstance(i, int) for i in ids), name
        for p in panels(d):
            where = f"{name} panel {p['id']} {p.get('title')!r}"
            assert p["type"] in PANEL_TYPES, where
            assert p.get("title"), where
            g = p["gridPos"]
            assert all(isinstance(g[k], int) and g[k] >= 0 for k in ("h", "w", "x", "y")), where
            assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= GRID_COLUMNS, where
            if p["type"] == "row":
                continue
            assert p["targets"], where
            ref_ids = [t["refId"] for t in p["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), where
            for t in p["targets"]:
                assert t["expr"].strip(), where
                assert t["datasource"]["type"] == "prometheus", where


def test_panels_do_not_overlap(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, d in dashboards.items():
        cells: dict[tuple[int, int], int] = {}
        for p in panels(d):
            g = p["gridPos"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{name}: panel {p['id']} overlaps panel {cells[(x, y)]}"
                    cells[(x, y)] = p["id"]


def test_variables_used_are_defined(dashboards: dict[str, dict[str, Any]]) -> None:
    for name, d in dashboards.items():
        defined = {v["name"] for v in d["templating"]["list"]}
        for v in d["templating"]["list"]:
            assert v["type"] in {"query", "datasource", "custom", "constant", "interval"}, name
        for p in panels(d):
            texts = [t["expr"] for t in p.get("targets", [])] + [p.get("datasource", {}).get("uid", "")]
            texts += [t.get("datasource", {}).get("uid", "") for t in p.get("targets", [])]
            for text in texts:
                for var in re.findall(r"\$\{?(\w+)\}?", text):
                    assert var in defined | BUILTIN_VARS, f"{name} panel {p['id']}: ${var} is not defined"


def test_overview_has_the_peak_load_panels(dashboards: dict[str, dict[str, Any]]) -> None:
    d = dashboards["labfleet-district-overview.json"]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for p in panels(d):
        by_type.setdefault(p["type"], []).append(p)
    heatmap = by_type["heatmap"][0]
    assert "school:uplink_utilisation:ratio" in heatmap["targets"][0]["expr"]
    assert heatmap["options"]["calculate"] is False  # rows are schools, not computed buckets
    exprs = " ".join(t["expr"] for p in panels(d) for t in p.get("targets", []))
    for needle in (
        "labfleet_devices_expected_online",
        "labfleet_school_active_sessions",
        "school_period:active_sessions:max1m",
        "labfleet_ingest_lag_seconds",
        "reason:ingest_dead_letters:rate5m",
    ):
        assert needle in exprs


def test_provisioning_files_are_valid() -> None:
    prov = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "labfleet.yml").read_text())
    assert prov["apiVersion"] == 1
    provider = prov["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"]
    ds = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "labfleet.yml").read_text())
    assert ds["apiVersion"] == 1
    assert ds["datasources"][0]["type"] == "prometheus"
    assert DASHBOARDS
