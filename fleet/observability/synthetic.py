"""A synthetic district at full scale, for the cardinality test, the scrape benchmark and demos.

It only builds plain values (a FleetSnapshot) and touches event metrics with every label combination a
district would produce, so the series count it yields is the budget the real service must stay under.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from fleet.domain.timetable import Period
from fleet.observability.catalog import (
    ALERT_SEVERITIES,
    COMMAND_NAMES,
    COMMAND_RESULTS,
    DEAD_LETTER_REASONS,
    DISCONNECT_REASONS,
    ENROLLMENT_RESULTS,
    HEALTH_STATES,
    INGEST_RESULTS,
    ROLLOUT_DEVICE_STATES,
    ROLLOUT_PAUSE_REASONS,
)
from fleet.observability.metrics import (
    FirmwareCount,
    FleetMetrics,
    FleetSnapshot,
    HealthCount,
    PresenceCount,
    RolloutState,
    SchoolState,
)
from fleet.observability.state import DeviceView, RoomView, SchoolView

DEVICE_KINDS = ("terminal", "robot", "mcu_kit", "sensor")
MODELS = (
    "terminal-lt100",
    "terminal-lt200",
    "robot-edubot-r2",
    "kit-esp32-mpy",
    "kit-uno-firmata",
    "sensor-air-s1",
)
COMMANDS = tuple(sorted(COMMAND_NAMES))
# Stand-in (method, route template) pairs for callers without the app at hand: 80, as many as the v1 API has
# (tests/observability/test_metrics_cardinality.py and the scrape benchmark use the real app's routes).
ROUTES = tuple(
    (method, f"/api/v1/{res}{suffix}")
    for res in (
        "devices",
        "schools",
        "rooms",
        "models",
        "rollouts",
        "alerts",
        "commands",
        "claim-tokens",
        "reports",
        "imports",
        "timetables",
        "calendar",
        "audit",
        "tokens",
        "districts",
        "dead-letters",
    )
    for method, suffix in (
        ("GET", ""),
        ("POST", ""),
        ("GET", "/{id}"),
        ("PATCH", "/{id}"),
        ("POST", "/{id}/actions"),
    )
)


@dataclass(frozen=True, slots=True)
class DistrictShape:
    schools: int = 50
    classrooms_per_school: int = 10  # 500 smart classrooms
    terminals_per_classroom: int = 17
    sensors_per_classroom: int = 1
    # one lab per school (50 labs), alternating digital lab and AI lab
    lab_terminals: int = 10
    lab_robots: int = 5
    lab_kits: int = 5

    @property
    def devices(self) -> int:
        per_school = self.classrooms_per_school * (self.terminals_per_classroom + self.sensors_per_classroom)
        return self.schools * (per_school + self.lab_terminals + self.lab_robots + self.lab_kits)


def school_code(i: int) -> str:
    return f"s{i:03d}"


_STATES = tuple((s, 10) for s in sorted(ROLLOUT_DEVICE_STATES))
# Three rollouts under way (one paused) and one finished: what a busy term week looks like.
ROLLOUTS = (
    RolloutState("r-101", "terminal-lt100", "running", _STATES),
    RolloutState("r-102", "terminal-lt200", "paused", _STATES),
    RolloutState("r-103", "kit-esp32-mpy", "running", _STATES),
    RolloutState("r-090", "terminal-lt100", "completed"),
)
# Seven 45-minute periods on each school day, 08:00 to 14:45.
PERIODS = tuple(
    Period(f"P{i + 1}", day, time(8 + i, 0), time(8 + i, 45)) for day in range(5) for i in range(7)
)
# Monday 2026-09-07 09:10 UTC: the second period, every room in a lesson.
LESSON_AT = datetime(2026, 9, 7, 9, 10, tzinfo=UTC)
_KIND_MODELS = {
    "terminal": ("terminal-lt100", "terminal-lt200"),
    "robot": ("robot-edubot-r2",),
    "mcu_kit": ("kit-esp32-mpy", "kit-uno-firmata"),
    "sensor": ("sensor-air-s1",),
}


def district_views(
    shape: DistrictShape = DistrictShape(),
) -> tuple[list[SchoolView], list[RoomView], list[DeviceView]]:
    """The district as the runtime holds it: one view per school, room and device (10,000 by default).

    Devices vary over every model, health state and four firmware versions; 2% are offline; terminals have a
    student signed in. `build_snapshot(LESSON_AT, *district_views())` is then the mid-lesson fleet state.
    """
    tz = ZoneInfo("UTC")
    health_states = sorted(HEALTH_STATES)
    schools: list[SchoolView] = []
    rooms: list[RoomView] = []
    devices: list[DeviceView] = []
    n = 0
    for i in range(shape.schools):
        code = school_code(i)
        schools.append(SchoolView(code, tz, 1e9, PERIODS))
        lab_kind = "digital_lab" if i % 2 == 0 else "ai_lab"
        room_specs = [
            (
                "smart_classroom",
                {"terminal": shape.terminals_per_classroom, "sensor": shape.sensors_per_classroom},
            )
        ] * shape.classrooms_per_school
        room_specs.append(
            (
                lab_kind,
                {"terminal": shape.lab_terminals, "robot": shape.lab_robots, "mcu_kit": shape.lab_kits},
            )
        )
        for r, (room_kind, kinds) in enumerate(room_specs):
            room_id = i * 100 + r
            rooms.append(RoomView(code, room_id, room_kind))
            for kind, count in kinds.items():
                for _ in range(count):
                    models = _KIND_MODELS[kind]
                    devices.append(
                        DeviceView(
                            code,
                            room_id,
                            kind,
                            models[n % len(models)],
                            online=n % 50 != 0,
                            health=health_states[(n // 7) % len(health_states)],
                            firmware_version=f"1.{(n // 3) % 4}.0",
                            session_active=kind == "terminal",
                        )
                    )
                    n += 1
    return schools, rooms, devices


def district_snapshot(shape: DistrictShape = DistrictShape(), taken_at: float = 0.0) -> FleetSnapshot:
    """A mid-lesson snapshot: most devices online, a few unexpectedly offline, one rollout paused."""
    presence: list[PresenceCount] = []
    schools: list[SchoolState] = []
    for i in range(shape.schools):
        code = school_code(i)
        lab_kind = "digital_lab" if i % 2 == 0 else "ai_lab"
        cells = (
            ("smart_classroom", "terminal", shape.classrooms_per_school * shape.terminals_per_classroom),
            ("smart_classroom", "sensor", shape.classrooms_per_school * shape.sensors_per_classroom),
            (lab_kind, "terminal", shape.lab_terminals),
            (lab_kind, "robot", shape.lab_robots),
            (lab_kind, "mcu_kit", shape.lab_kits),
        )
        for room_kind, kind, n in cells:
            offline = n // 50  # 2% unexpectedly offline
            presence.append(PresenceCount(code, room_kind, kind, n, n - offline, n, offline))
        schools.append(
            SchoolState(code, shape.classrooms_per_school, "P3", 1e9, shape.classrooms_per_school * 17)
        )
    per_model = shape.devices // len(MODELS)
    health = tuple(HealthCount(m, s, per_model // 4) for m in MODELS for s in sorted(HEALTH_STATES))
    firmware = tuple(FirmwareCount(m, f"1.{v}.0", per_model // 4) for m in MODELS for v in range(4))
    return FleetSnapshot(
        taken_at=taken_at,
        presence=tuple(presence),
        schools=tuple(schools),
        health=health,
        open_alerts=tuple((s, 3) for s in sorted(ALERT_SEVERITIES)),
        firmware=firmware,
        rollouts=ROLLOUTS,
    )


def exercise_event_metrics(
    metrics: FleetMetrics, shape: DistrictShape = DistrictShape(), routes: Iterable[tuple[str, str]] = ROUTES
) -> None:
    """Touch every event metric with every label combination a district produces (routes: (method,
    template))."""
    for kind in DEVICE_KINDS:
        metrics.mqtt_connected(kind)
        for reason in DISCONNECT_REASONS:
            metrics.mqtt_disconnected(kind, reason)
    metrics.broker_connection(True)
    for result in ENROLLMENT_RESULTS:
        metrics.enrollment(result)
    for result in INGEST_RESULTS:
        metrics.ingest_message(result)
    metrics.ingest_committed(500, 0.02)
    metrics.ingest_queue_depth.set(10)
    metrics.ingest_queue_capacity.set(50_000)
    metrics.ingest_lag_seconds.set(0.5)
    for reason in DEAD_LETTER_REASONS:
        metrics.dead_letter(reason)
    for command in COMMANDS:
        for result in COMMAND_RESULTS:
            metrics.command_finished(command, result, 0.2)
    for method, route in routes:
        for status in (200, 404, 500):  # every route answering every status class: the worst case
            metrics.http_request(method, route, status, 0.01)
    metrics.http_request("GET", "unmatched", 404, 0.001)
    for i in range(shape.schools):
        metrics.school_traffic(school_code(i), "up", 1000)
        metrics.school_traffic(school_code(i), "down", 1000)
    for model in MODELS:
        for state in HEALTH_STATES:
            metrics.health_transition(model, state)
        for state in ROLLOUT_DEVICE_STATES:
            metrics.rollout_transition(model, state)
    for severity in ALERT_SEVERITIES:
        metrics.alert_opened(severity)
    for reason in ROLLOUT_PAUSE_REASONS:
        metrics.rollout_paused(reason)
