"""Cardinality budget: the full 10,000-device, 500-classroom district stays under 5,000 series."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest

from fleet.observability.metrics import FleetMetrics, SnapshotHolder
from fleet.observability.synthetic import DistrictShape, district_snapshot, exercise_event_metrics

SERIES_BUDGET = 5_000  # issue 5: the series count must not grow with the fleet


def _series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def _scrape(shape: DistrictShape) -> tuple[int, float]:
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    exercise_event_metrics(metrics, shape)
    holder = SnapshotHolder()
    holder.publish(district_snapshot(shape))
    metrics.register_state(holder)
    start = time.perf_counter()
    text = generate_latest(registry).decode()
    return _series(text), (time.perf_counter() - start) * 1000


def test_full_district_exposition_stays_within_series_budget() -> None:
    shape = DistrictShape()
    assert shape.devices == 10_000
    assert shape.schools * shape.classrooms_per_school == 500
    series, ms = _scrape(shape)
    print(f"district exposition: {series} series, scrape {ms:.1f} ms")  # figure only; timing lives in benchmarks/
    assert series <= SERIES_BUDGET


def test_series_count_does_not_grow_with_devices_per_room() -> None:
    small, _ = _scrape(DistrictShape(terminals_per_classroom=2))
    large, _ = _scrape(DistrictShape(terminals_per_classroom=40))
    assert small == large
