"""Cardinality budget: the full 10,000-device, 500-classroom district stays under 5,000 series.

The state comes from `build_snapshot` over 10,000 device views (what the runtime does), the HTTP latency
labels from the real app's route templates, and every other event metric from every label value it can take.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fleet.app import create_app
from fleet.observability.http import route_templates
from fleet.observability.metrics import FleetMetrics, SnapshotHolder
from fleet.observability.state import build_snapshot
from fleet.observability.synthetic import (
    LESSON_AT,
    ROLLOUTS,
    DistrictShape,
    district_views,
    exercise_event_metrics,
)
from fleet.settings import Settings

SERIES_BUDGET = 5_000  # issue 5: the series count must not grow with the fleet


@pytest.fixture(scope="module")
def routes() -> list[tuple[str, str]]:
    return route_templates(create_app(Settings(database_url="sqlite+aiosqlite:///:memory:"), migrate=False))


def _series(text: str) -> Counter[str]:
    """Series per metric family (histogram _bucket/_sum/_count folded into the family)."""
    out: Counter[str] = Counter()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            for suffix in ("_bucket", "_sum", "_count"):
                name = name.removesuffix(suffix)
            out[name] += 1
    return out


def _scrape(shape: DistrictShape, routes: list[tuple[str, str]]) -> tuple[Counter[str], float]:
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    exercise_event_metrics(metrics, shape, routes)
    holder = SnapshotHolder()
    holder.publish(
        build_snapshot(
            LESSON_AT,
            *district_views(shape),
            open_alerts=[("warning", 3), ("critical", 1)],
            rollouts=ROLLOUTS,
        )
    )
    metrics.register_state(holder)
    start = time.perf_counter()
    text = generate_latest(registry).decode()
    return _series(text), (time.perf_counter() - start) * 1000


def test_full_district_exposition_stays_within_series_budget(routes: list[tuple[str, str]]) -> None:
    shape = DistrictShape()
    assert shape.devices == 10_000
    assert shape.schools * shape.classrooms_per_school == 500
    assert len(district_views(shape)[2]) == 10_000
    series, ms = _scrape(shape, routes)
    total = sum(series.values())
    # Figures only; timing assertions live in benchmarks/metrics_scrape.py.
    print(
        f"district exposition: {total} series ({len(routes)} routes), scrape {ms:.1f} ms; "
        f"largest: {series.most_common(4)}"
    )
    assert total <= SERIES_BUDGET
    # The per-route latency histogram was the biggest single cost (~2,100 series with method and status class
    # as labels): it must stay a minority of the budget.
    http = series["labfleet_http_request_duration_seconds"] + series["labfleet_http_requests_total"]
    assert http <= SERIES_BUDGET // 4, http


def test_series_count_does_not_grow_with_devices_per_room(routes: list[tuple[str, str]]) -> None:
    small, _ = _scrape(DistrictShape(terminals_per_classroom=2), routes)
    large, _ = _scrape(DistrictShape(terminals_per_classroom=40), routes)
    assert sum(small.values()) == sum(large.values())
