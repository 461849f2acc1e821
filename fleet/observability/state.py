"""Build a FleetSnapshot from plain in-memory views of schools, rooms and devices at a given instant.

The MQTT runtime keeps these views current (presence, health, firmware, sessions) and calls
`build_snapshot(clock.now(), ...)` on its own schedule, then publishes the result to a SnapshotHolder.
The timetable decides what "expected online" means: a device is expected online while its room has a
lesson, so a closed room is never counted as an outage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from fleet.domain.timetable import CalendarEntry, Period, lesson_at
from fleet.observability.metrics import (
    FirmwareCount,
    FleetSnapshot,
    HealthCount,
    PresenceCount,
    RolloutState,
    SchoolState,
)

NO_ROOM = "none"  # room_kind label for devices not placed in a room (stock, repair bench)


@dataclass(frozen=True, slots=True)
class SchoolView:
    code: str
    timezone: ZoneInfo
    uplink_capacity_bps: float
    periods: tuple[Period, ...] = ()
    calendar: tuple[CalendarEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class RoomView:
    school: str
    room_id: int
    room_kind: str


@dataclass(frozen=True, slots=True)
class DeviceView:
    """One in-service device as the runtime sees it now; no identifiers leave this function."""

    school: str
    room_id: int | None
    device_kind: str
    model: str
    online: bool
    health: str = "unknown"
    firmware_version: str | None = None
    session_active: bool = False  # a student is signed in (terminals)


def build_snapshot(
    now: datetime,
    schools: Iterable[SchoolView],
    rooms: Iterable[RoomView],
    devices: Iterable[DeviceView],
    *,
    open_alerts: Iterable[tuple[str, int]] = (),
    rollouts: Iterable[RolloutState] = (),
) -> FleetSnapshot:
    """Aggregate the views into per-(school, room kind, device kind) counts and per-school state at `now`."""
    school_list = list(schools)
    by_code = {s.code: s for s in school_list}
    room_kind: dict[tuple[str, int], str] = {}
    in_lesson: dict[tuple[str, int], bool] = {}
    lessons = Counter[str]()
    for room in rooms:
        school = by_code.get(room.school)
        key = (room.school, room.room_id)
        room_kind[key] = room.room_kind
        on = (
            school is not None
            and lesson_at(school.periods, school.calendar, now, school.timezone, room.room_id).in_lesson
        )
        in_lesson[key] = on
        if on:
            lessons[room.school] += 1

    # [in_service, online, expected_online, unexpectedly_offline] per cell
    cells: dict[tuple[str, str, str], list[int]] = {}
    health = Counter[tuple[str, str]]()
    firmware = Counter[tuple[str, str]]()
    sessions = Counter[str]()
    for d in devices:
        if d.room_id is None:
            kind_of_room, expected = NO_ROOM, False
        else:
            key = (d.school, d.room_id)
            kind_of_room, expected = room_kind.get(key, NO_ROOM), in_lesson.get(key, False)
        cell = cells.setdefault((d.school, kind_of_room, d.device_kind), [0, 0, 0, 0])
        cell[0] += 1
        cell[1] += d.online
        cell[2] += expected
        cell[3] += expected and not d.online
        health[(d.model, d.health)] += 1
        if d.firmware_version:
            firmware[(d.model, d.firmware_version)] += 1
        if d.session_active and d.online:
            sessions[d.school] += 1

    school_states = []
    for s in school_list:
        bell = lesson_at(s.periods, s.calendar, now, s.timezone, None)
        school_states.append(
            SchoolState(s.code, lessons[s.code], bell.period, s.uplink_capacity_bps, sessions[s.code])
        )
    return FleetSnapshot(
        taken_at=now.timestamp(),
        presence=tuple(PresenceCount(sc, rk, dk, *counts) for (sc, rk, dk), counts in sorted(cells.items())),
        schools=tuple(school_states),
        health=tuple(HealthCount(m, st, n) for (m, st), n in sorted(health.items())),
        open_alerts=tuple(open_alerts),
        firmware=tuple(FirmwareCount(m, v, n) for (m, v), n in sorted(firmware.items())),
        rollouts=tuple(rollouts),
    )
