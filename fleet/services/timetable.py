"""Bell schedules, term calendars and the one question everything asks: is a lesson on in room R at T?"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any, ClassVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.clock import Clock
from fleet.domain.permissions import Permission, Principal
from fleet.domain.timetable import CalendarEntry, LessonState, Period, lesson_at, validate_period
from fleet.errors import InvalidInput, NotFound
from fleet.persistence.models import BellPeriod, CalendarDay, Room, School
from fleet.services.common import require
from fleet.services.crud import CrudService


class BellPeriodService(CrudService):
    model = BellPeriod
    name = "bell_period"
    write = Permission.MANAGE_ROOMS
    fields = ("school_id", "room_id", "weekday", "name", "start_time", "end_time")
    filters: ClassVar[dict[str, str]] = {"school": "school_id", "room": "room_id", "weekday": "weekday"}
    has_timestamps = False

    async def validate(self, values: dict[str, Any], existing: Any | None) -> dict[str, Any]:
        school_id = await self.school_in_scope(values, existing)
        await self.room_in_school(values, existing, school_id)
        start = values.get("start_time", existing.start_time if existing else None)
        end = values.get("end_time", existing.end_time if existing else None)
        try:
            validate_period(start, end)  # type: ignore[arg-type]  # set: required on create
        except ValueError as err:
            raise InvalidInput(
                str(err), details=[{"field": "end_time", "reason": str(err), "code": "end_before_start"}]
            ) from err
        await self._no_overlap(values, existing, school_id, start, end)  # type: ignore[arg-type]
        return values

    async def _no_overlap(
        self, values: dict[str, Any], existing: Any | None, school_id: int, start: time, end: time
    ) -> None:
        """Two periods of one schedule (the school's, or one room's) may not share a minute on one weekday:
        "which period is on now" must have one answer."""
        weekday = values.get("weekday", existing.weekday if existing else None)
        room_id = values.get("room_id", existing.room_id if existing else None)
        stmt = select(BellPeriod).where(
            BellPeriod.school_id == school_id,
            BellPeriod.weekday == weekday,
            BellPeriod.room_id.is_(None) if room_id is None else BellPeriod.room_id == room_id,
            BellPeriod.start_time < end,
            BellPeriod.end_time > start,
        )
        if existing is not None:
            stmt = stmt.where(BellPeriod.id != existing.id)
        other = (
            await self.session.execute(stmt.order_by(BellPeriod.start_time).limit(1))
        ).scalar_one_or_none()
        if other is not None:
            span = f"{other.start_time:%H:%M}-{other.end_time:%H:%M}"
            raise InvalidInput(
                f"the period overlaps period {other.name!r} ({span}) on the same day",
                details=[
                    {
                        "field": "start_time",
                        "reason": f"overlaps {other.name} ({span})",
                        "code": "overlap",
                        "period": other.name,
                        "span": span,
                    }
                ],
            )


class CalendarService(CrudService):
    model = CalendarDay
    name = "calendar_entry"
    write = Permission.MANAGE_ROOMS
    fields = ("school_id", "kind", "name", "start_date", "end_date")
    filters: ClassVar[dict[str, str]] = {"school": "school_id", "kind": "kind"}
    has_timestamps = False

    async def validate(self, values: dict[str, Any], existing: Any | None) -> dict[str, Any]:
        await self.school_in_scope(values, existing)
        start = values.get("start_date", existing.start_date if existing else None)
        end = values.get("end_date", existing.end_date if existing else None)
        if start is not None and end is not None and end < start:
            raise InvalidInput(
                "end_date is before start_date",
                details=[{"field": "end_date", "reason": "before start_date", "code": "end_before_start"}],
            )
        return values


async def load_school_timetable(
    session: AsyncSession, school_id: int
) -> tuple[list[Period], list[CalendarEntry]]:
    periods = [
        Period(name=p.name, weekday=p.weekday, start=p.start_time, end=p.end_time, room_id=p.room_id)
        for p in (
            await session.execute(select(BellPeriod).where(BellPeriod.school_id == school_id))
        ).scalars()
    ]
    calendar = [
        CalendarEntry(kind=c.kind, start=c.start_date, end=c.end_date, name=c.name)  # type: ignore[arg-type]  # CalendarKind text
        for c in (
            await session.execute(select(CalendarDay).where(CalendarDay.school_id == school_id))
        ).scalars()
    ]
    return periods, calendar


async def lesson_state(session: AsyncSession, room_id: int, at: datetime) -> LessonState:
    """Is a lesson on in room `room_id` at `at`, and which period? (No scope check: for internal callers.)"""
    room = await session.get(Room, room_id)
    if room is None:
        raise NotFound(f"room {room_id} not found")
    school = await session.get(School, room.school_id)
    assert school is not None
    periods, calendar = await load_school_timetable(session, school.id)
    return lesson_at(periods, calendar, at, school.timezone, room_id=room.id)


async def room_lesson(
    session: AsyncSession, principal: Principal, clock: Clock, room_id: int, at: datetime | None = None
) -> tuple[datetime, LessonState]:
    """Is a lesson on in a room of the principal's schools at `at` (default now), and which period?"""
    from fleet.services.inventory import RoomService  # inventory's room rules (scope) in one place

    require(principal, Permission.READ_INVENTORY)
    await RoomService(session, principal, clock).get(room_id)
    when = at or clock.now()
    if when.tzinfo is None:
        raise InvalidInput("at needs a time zone offset, e.g. 2026-09-07T08:00:00+08:00")
    return when, await lesson_state(session, room_id, when)
