"""A real Prometheus scrapes LabFleet exporters and evaluates the shipped rules.

Two exporters stand in for the service (fleet state + traffic) and an ingest worker (traffic): they serve
FleetMetrics registries over HTTP exactly as /metrics does. The state comes from build_snapshot over two
schools' device views at an injected clock; traffic counters grow at known rates in wall-clock time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from fleet.domain.clock import FakeClock
from fleet.domain.timetable import Period
from fleet.observability.metrics import FleetMetrics, RolloutState, SnapshotHolder
from fleet.observability.state import DeviceView, RoomView, SchoolView, build_snapshot
from tests.monitoring.prometheus_server import Sample, run_prometheus
from tests.monitoring.promql_names import RULE_FILES

pytestmark = [pytest.mark.external, pytest.mark.slow]

TZ = ZoneInfo("Europe/Berlin")
PERIODS = tuple(Period(name, 0, start, end) for name, start, end in (
    ("P1", dtime(8, 0), dtime(8, 45)), ("P2", dtime(8, 55), dtime(9, 40))))
# Bytes per second the "devices" send, split between the service and the ingest worker for s001.
RATES = {("s001", "service"): 30_000.0, ("s001", "ingest"): 20_000.0, ("s002", "service"): 10_000.0}
# 6 s windows over 1 s scrapes: long enough to average out scrape jitter, short enough for a fast test.
RATE_WINDOW = "6s"


def _world() -> tuple[list[SchoolView], list[RoomView], list[DeviceView]]:
    schools = [SchoolView("s001", TZ, 1_000_000.0, PERIODS), SchoolView("s002", TZ, 500_000.0, PERIODS)]
    rooms = [RoomView("s001", 1, "smart_classroom"), RoomView("s001", 2, "digital_lab"),
             RoomView("s002", 3, "smart_classroom")]
    devices = (
        [DeviceView("s001", 1, "terminal", "terminal-lt100", online=i >= 3, health="ok") for i in range(40)]
        + [DeviceView("s001", 2, "robot", "robot-edubot-r2", online=True, health="ok") for _ in range(6)]
        + [DeviceView("s002", 3, "terminal", "terminal-lt200", online=True, health="ok",
                      session_active=True) for _ in range(15)]
    )
    return schools, rooms, devices


class Traffic(threading.Thread):
    """Grows each school_bytes counter as rate x elapsed wall-clock time, in small steps."""

    def __init__(self, metrics: dict[str, FleetMetrics]) -> None:
        super().__init__(name="traffic", daemon=True)
        self._metrics = metrics
        self._halt = threading.Event()
        self._sent = dict.fromkeys(RATES, 0.0)

    def run(self) -> None:
        start = time.monotonic()
        while not self._halt.wait(0.02):
            elapsed = time.monotonic() - start
            for (school, proc), rate in RATES.items():
                due = rate * elapsed - self._sent[(school, proc)]
                self._metrics[proc].school_traffic(school, "up", int(due))
                self._sent[(school, proc)] += int(due)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


@pytest.fixture
def exporters() -> Iterator[tuple[dict[str, FleetMetrics], dict[str, int], SnapshotHolder]]:
    metrics, ports, servers = {}, {}, []
    holder = SnapshotHolder()
    for proc in ("service", "ingest"):
        registry = CollectorRegistry()
        metrics[proc] = FleetMetrics(registry)
        metrics[proc].broker_connection(True)
        httpd, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        servers.append(httpd)
        ports[proc] = httpd.server_port
    metrics["service"].register_state(holder)
    try:
        yield metrics, ports, holder
    finally:
        for httpd in servers:
            httpd.shutdown()
            httpd.server_close()


def _by(samples: list[Sample], label: str) -> dict[str, float]:
    return {s[0][label]: s[1] for s in samples}


def test_prometheus_scrapes_state_and_traffic_and_evaluates_the_rules(
    tmp_path: Path, exporters: tuple[dict[str, FleetMetrics], dict[str, int], SnapshotHolder]
) -> None:
    metrics, ports, holder = exporters
    clock = FakeClock(datetime(2026, 9, 7, 8, 10, tzinfo=TZ).astimezone(UTC))  # Monday, P1
    world = _world()
    paused = RolloutState("r-9", "terminal-lt100", "paused", (("failed", 4), ("succeeded", 6)))
    holder.publish(build_snapshot(clock.now(), *world, rollouts=(paused,)))
    jobs = [
        {"job_name": "labfleet-service", "static_configs": [{"targets": [f"127.0.0.1:{ports['service']}"]}]},
        {"job_name": "labfleet-ingest", "static_configs": [{"targets": [f"127.0.0.1:{ports['ingest']}"]}]},
    ]
    traffic = Traffic(metrics)
    traffic.start()
    try:
        with run_prometheus(tmp_path, jobs, RULE_FILES) as prom:
            # Online counts per school, through a recording rule, equal the simulated ones.
            online = prom.wait_for("school:devices_online:sum", lambda r: len(r) == 2)
            assert _by(online, "school") == {"s001": 43.0, "s002": 15.0}
            # Rule groups evaluate independently: wait for this group's first evaluation too.
            offline = prom.wait_for("school_room_kind:devices_unexpectedly_offline:ratio", lambda r: len(r) == 3)
            assert {(s[0]["school"], s[0]["room_kind"]): round(s[1], 4) for s in offline} == {
                ("s001", "smart_classroom"): 0.075, ("s001", "digital_lab"): 0.0, ("s002", "smart_classroom"): 0.0}
            assert _by(prom.query("labfleet_school_lessons_in_progress"), "school") == {"s001": 2.0, "s002": 1.0}
            assert _by(prom.query("labfleet_school_current_period"), "school") == {"s001": 1.0, "s002": 1.0}

            # Bytes rate per school (summed over both processes) within 10% of what was sent.
            expr = f'sum by (school) (rate(labfleet_school_bytes_total{{direction="up"}}[{RATE_WINDOW}]))'
            prom.wait_for(f"count_over_time(labfleet_school_bytes_total[{RATE_WINDOW}])",
                          lambda r: len(r) == 3 and min(v for _, v in r) >= 6, timeout=30)
            rates = _by(prom.query(expr), "school")
            print(f"bytes rate per school from Prometheus: {rates} (sent: s001 50000, s002 10000 B/s)")
            assert rates["s001"] == pytest.approx(50_000, rel=0.10)
            assert rates["s002"] == pytest.approx(10_000, rel=0.10)
            prom.wait_for("school:uplink_utilisation:ratio", lambda r: len(r) == 2)

            # The paused rollout fires its alert in the real rule engine.
            prom.wait_for('ALERTS{alertname="RolloutPaused",alertstate="firing"}',
                          lambda r: [s[0]["rollout"] for s in r] == ["r-9"])

            # The lesson gauge follows the injected clock: the 08:45 bell ends P1.
            clock.set(datetime(2026, 9, 7, 8, 50, tzinfo=TZ).astimezone(UTC))
            holder.publish(build_snapshot(clock.now(), *world))
            prom.wait_for('labfleet_school_lessons_in_progress{school="s001"}', lambda r: r[0][1] == 0.0)
            assert prom.query('labfleet_school_current_period{school="s001"}') == []
            assert prom.query('labfleet_devices_expected_online{school="s001"}') != []
            assert sum(v for _, v in prom.query("labfleet_devices_unexpectedly_offline")) == 0
            clock.set(datetime(2026, 9, 7, 9, 0, tzinfo=TZ).astimezone(UTC))
            holder.publish(build_snapshot(clock.now(), *world))
            period = prom.wait_for('labfleet_school_current_period{school="s001"}', lambda r: len(r) == 1)
            assert period[0][0]["period"] == "P2"
    finally:
        traffic.stop()
