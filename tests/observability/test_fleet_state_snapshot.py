"""build_snapshot: presence against the timetable, lessons and the current period follow the clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry

from fleet.domain.clock import FakeClock
from fleet.domain.enums import CalendarKind
from fleet.domain.timetable import CalendarEntry, Period
from fleet.observability.metrics import FleetMetrics, PresenceCount, SnapshotHolder
from fleet.observability.state import DeviceView, RoomView, SchoolView, build_snapshot

BERLIN = ZoneInfo("Europe/Berlin")
# Monday 2026-09-07. Bell schedule: P1 08:00-08:45, P2 08:55-09:40 local; room 3 (the lab) has its own P1
# only.
MONDAY = 0
PERIODS = (
    Period("P1", MONDAY, time(8, 0), time(8, 45)),
    Period("P2", MONDAY, time(8, 55), time(9, 40)),
    Period("LAB1", MONDAY, time(9, 0), time(10, 30), room_id=3),
)


def _at(hh: int, mm: int, day: int = 7) -> datetime:
    return datetime(2026, 9, day, hh, mm, tzinfo=BERLIN).astimezone(UTC)


def _world(
    calendar: tuple[CalendarEntry, ...] = (),
) -> tuple[list[SchoolView], list[RoomView], list[DeviceView]]:
    schools = [SchoolView("s001", BERLIN, 200e6, PERIODS, calendar), SchoolView("s002", BERLIN, 100e6)]
    rooms = [
        RoomView("s001", 1, "smart_classroom"),
        RoomView("s001", 2, "smart_classroom"),
        RoomView("s001", 3, "ai_lab"),
        RoomView("s002", 9, "smart_classroom"),
    ]
    devices = (
        [
            DeviceView(
                "s001",
                1,
                "terminal",
                "terminal-lt100",
                online=True,
                health="ok",
                firmware_version="1.2.0",
                session_active=True,
            )
        ]
        * 18
        + [
            DeviceView(
                "s001",
                1,
                "terminal",
                "terminal-lt100",
                online=False,
                health="ok",
                firmware_version="1.1.0",
                session_active=True,
            )
        ]
        * 2
        + [DeviceView("s001", 2, "terminal", "terminal-lt200", online=False, health="fault")] * 20
        + [DeviceView("s001", 3, "robot", "robot-edubot-r2", online=True, health="degraded")] * 4
        + [DeviceView("s001", None, "terminal", "terminal-lt100", online=False)] * 5
        + [DeviceView("s002", 9, "sensor", "sensor-air-s1", online=True)]
    )
    return schools, rooms, devices


def _cell(snapshot, school: str, room_kind: str, kind: str) -> PresenceCount:
    return next(
        p for p in snapshot.presence if (p.school, p.room_kind, p.device_kind) == (school, room_kind, kind)
    )


def test_during_p1_classroom_devices_are_expected_and_offline_ones_counted() -> None:
    snap = build_snapshot(_at(8, 10), *_world())
    classroom = _cell(snap, "s001", "smart_classroom", "terminal")
    assert (
        classroom.in_service,
        classroom.online,
        classroom.expected_online,
        classroom.unexpectedly_offline,
    ) == (40, 18, 40, 22)
    lab = _cell(snap, "s001", "ai_lab", "robot")
    assert (lab.expected_online, lab.unexpectedly_offline) == (
        0,
        0,
    )  # the lab's own timetable has no lesson yet
    s001 = next(s for s in snap.schools if s.school == "s001")
    assert (s001.lessons_in_progress, s001.current_period) == (2, "P1")


def test_between_periods_nothing_is_expected_and_no_period_is_current() -> None:
    snap = build_snapshot(_at(8, 50), *_world())
    classroom = _cell(snap, "s001", "smart_classroom", "terminal")
    assert (classroom.expected_online, classroom.unexpectedly_offline) == (0, 0)
    s001 = next(s for s in snap.schools if s.school == "s001")
    assert (s001.lessons_in_progress, s001.current_period) == (0, None)


def test_room_specific_periods_override_the_bell_schedule() -> None:
    snap = build_snapshot(_at(9, 45), *_world())  # P2 over, LAB1 still on
    assert _cell(snap, "s001", "ai_lab", "robot").expected_online == 4
    assert _cell(snap, "s001", "smart_classroom", "terminal").expected_online == 0
    s001 = next(s for s in snap.schools if s.school == "s001")
    assert (s001.lessons_in_progress, s001.current_period) == (1, None)


def test_holiday_means_no_lessons_and_nothing_expected() -> None:
    holiday = (CalendarEntry(CalendarKind.HOLIDAY, date(2026, 9, 7), date(2026, 9, 7), "Founders' day"),)
    snap = build_snapshot(_at(8, 10), *_world(holiday))
    assert all(p.expected_online == 0 for p in snap.presence)
    assert all(s.lessons_in_progress == 0 for s in snap.schools)


def test_devices_without_a_room_are_never_expected() -> None:
    snap = build_snapshot(_at(8, 10), *_world())
    stock = _cell(snap, "s001", "none", "terminal")
    assert (stock.in_service, stock.expected_online, stock.unexpectedly_offline) == (5, 0, 0)


def test_health_firmware_and_sessions_are_counted() -> None:
    snap = build_snapshot(_at(8, 10), *_world())
    health = {(h.model, h.state): h.count for h in snap.health}
    assert health[("terminal-lt200", "fault")] == 20
    assert health[("robot-edubot-r2", "degraded")] == 4
    firmware = {(f.model, f.version): f.count for f in snap.firmware}
    assert firmware == {("terminal-lt100", "1.2.0"): 18, ("terminal-lt100", "1.1.0"): 2}
    s001 = next(s for s in snap.schools if s.school == "s001")
    assert s001.active_sessions == 18  # sessions on offline terminals do not count
    assert s001.uplink_capacity_bps == 200e6


def test_lesson_gauge_follows_an_injected_clock_through_the_collector() -> None:
    clock = FakeClock(_at(7, 55))
    registry = CollectorRegistry()
    holder = SnapshotHolder()
    FleetMetrics(registry).register_state(holder, clock=lambda: clock.now().timestamp())
    world = _world()
    seen = []
    for hh, mm in ((7, 55), (8, 10), (8, 50), (9, 0), (9, 45)):
        clock.set(_at(hh, mm))
        holder.publish(build_snapshot(clock.now(), *world))
        periods = [
            p
            for p in ("P1", "P2")
            if registry.get_sample_value("labfleet_school_current_period", {"school": "s001", "period": p})
        ]
        seen.append(
            (registry.get_sample_value("labfleet_school_lessons_in_progress", {"school": "s001"}), periods)
        )
    # 07:55 before school; 08:10 P1 in both classrooms; 08:50 break; 09:00 P2 + the lab; 09:45 only the lab.
    assert seen == [(0, []), (2, ["P1"]), (0, []), (3, ["P2"]), (1, [])]
