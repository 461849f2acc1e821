"""Scrape time of /metrics for the full 10,000-device district, against an event-metrics-only baseline.

The baseline (same process, same registry type) exposes only the direct-instrumentation metrics, so the
ratio shows what the scrape-time state collector costs. Ends with one JSON line of figures.
"""

from __future__ import annotations

import json
import statistics
import time

from prometheus_client import CollectorRegistry, generate_latest

from fleet.observability.metrics import FleetMetrics, SnapshotHolder
from fleet.observability.synthetic import DistrictShape, district_snapshot, exercise_event_metrics

ROUNDS = 30  # enough for a stable median on a shared 2-core machine, under two seconds in all
SCRAPE_BUDGET_MS = 100.0  # issue 5: one scrape of the district takes at most 100 ms


def _median_ms(registry: CollectorRegistry) -> tuple[float, int, int]:
    times = []
    text = b""
    for _ in range(ROUNDS):
        start = time.perf_counter()
        text = generate_latest(registry)
        times.append((time.perf_counter() - start) * 1000)
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    return statistics.median(times), series, len(text)


def main() -> None:
    shape = DistrictShape()
    baseline_reg = CollectorRegistry()
    exercise_event_metrics(FleetMetrics(baseline_reg), shape)
    base_ms, base_series, _ = _median_ms(baseline_reg)

    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    exercise_event_metrics(metrics, shape)
    holder = SnapshotHolder()
    holder.publish(district_snapshot(shape, taken_at=time.time()))
    metrics.register_state(holder)
    full_ms, series, size = _median_ms(registry)

    print(f"district: {shape.schools} schools, {shape.devices} devices")
    print(f"baseline (event metrics only): {base_ms:.1f} ms for {base_series} series")
    print(f"full scrape (events + state collector): {full_ms:.1f} ms for {series} series, {size} bytes")
    print(f"ratio full/baseline: {full_ms / base_ms:.2f}; budget {SCRAPE_BUDGET_MS:.0f} ms "
          f"({'within' if full_ms <= SCRAPE_BUDGET_MS else 'OVER'})")
    print(json.dumps({
        "benchmark": "metrics_scrape", "devices": shape.devices, "schools": shape.schools,
        "series": series, "bytes": size, "scrape_ms_median": round(full_ms, 2),
        "baseline_ms_median": round(base_ms, 2), "ratio": round(full_ms / base_ms, 2),
        "budget_ms": SCRAPE_BUDGET_MS,
    }))


if __name__ == "__main__":
    main()
