"""Scrape time of /metrics for the full 10,000-device district, against an event-metrics-only baseline.

The baseline (same process, same registry type) exposes only the direct-instrumentation metrics (HTTP labels
from the real app's route templates), so the ratio shows what the scrape-time state collector costs. The
headline figure scrapes a freshly published snapshot each round (the collector's per-snapshot cache cannot
help); the second reuses one. It also times `build_snapshot` over 10,000 device views (what the runtime pays
each time it refreshes the snapshot). Ends with one JSON line of figures.
"""

from __future__ import annotations

import json
import os
import statistics
import time

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

ROUNDS = 30  # enough for a stable median on a shared 2-core machine, under two seconds in all
SCRAPE_BUDGET_MS = 100.0  # issue 5: one scrape of the district takes at most 100 ms


def _median_ms(registry: CollectorRegistry, before: object = None) -> tuple[float, int, int]:
    """Median time of generate_latest; `before()` runs (untimed) ahead of each round."""
    times = []
    text = b""
    for _ in range(ROUNDS):
        if callable(before):
            before()
        start = time.perf_counter()
        text = generate_latest(registry)
        times.append((time.perf_counter() - start) * 1000)
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    return statistics.median(times), series, len(text)


def main() -> None:
    shape = DistrictShape()
    routes = route_templates(create_app(Settings(database_url="sqlite+aiosqlite:///:memory:"), migrate=False))
    baseline_reg = CollectorRegistry()
    exercise_event_metrics(FleetMetrics(baseline_reg), shape, routes)
    base_ms, base_series, _ = _median_ms(baseline_reg)

    views = district_views(shape)
    build_times = []
    snap = None
    for _ in range(5):
        start = time.perf_counter()
        snap = build_snapshot(LESSON_AT, *views, open_alerts=[("warning", 3)], rollouts=ROLLOUTS)
        build_times.append((time.perf_counter() - start) * 1000)
    build_ms = statistics.median(build_times)
    assert snap is not None

    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    exercise_event_metrics(metrics, shape, routes)
    holder = SnapshotHolder()
    metrics.register_state(holder)

    def fresh_snapshot() -> None:
        # A new snapshot object each round: the collector cannot reuse the previous scrape's families.
        holder.publish(build_snapshot(LESSON_AT, *views, open_alerts=[("warning", 3)], rollouts=ROLLOUTS))

    full_ms, series, size = _median_ms(registry, fresh_snapshot)
    warm_ms, _, _ = _median_ms(registry)

    load = os.getloadavg()[0]
    print(f"district: {shape.schools} schools, {shape.devices} devices, {len(routes)} API routes")
    print(f"build_snapshot over {len(views[2])} device views: {build_ms:.1f} ms")
    print(f"baseline (event metrics only): {base_ms:.1f} ms for {base_series} series")
    print(
        f"full scrape, fresh snapshot (events + state collector): {full_ms:.1f} ms for {series} series, "
        f"{size} bytes"
    )
    print(f"full scrape, same snapshot as the previous scrape: {warm_ms:.1f} ms")
    print(
        f"ratio full/baseline: {full_ms / base_ms:.2f}; budget {SCRAPE_BUDGET_MS:.0f} ms "
        f"({'within' if full_ms <= SCRAPE_BUDGET_MS else 'OVER'}); load average {load:.1f}"
    )
    print(
        json.dumps(
            {
                "benchmark": "metrics_scrape",
                "devices": shape.devices,
                "schools": shape.schools,
                "routes": len(routes),
                "series": series,
                "bytes": size,
                "scrape_ms_median": round(full_ms, 2),
                "scrape_same_snapshot_ms_median": round(warm_ms, 2),
                "baseline_ms_median": round(base_ms, 2),
                "ratio": round(full_ms / base_ms, 2),
                "budget_ms": SCRAPE_BUDGET_MS,
                "build_snapshot_ms_median": round(build_ms, 2),
                "loadavg_1m": round(load, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
