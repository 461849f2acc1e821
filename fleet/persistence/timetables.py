"""Bell periods and term calendars of every school, held in memory for the ingest and presence paths."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.domain.enums import CalendarKind
from fleet.domain.timetable import CalendarEntry, Period, lesson_at
from fleet.persistence.ingest_repo import DeviceRef
from fleet.persistence.models import BellPeriod, CalendarDay, School


class Timetables:
    """Bell periods and calendars of every school in memory; answers "is a lesson on in this room now"."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._periods: dict[int, list[Period]] = {}
        self._calendar: dict[int, list[CalendarEntry]] = {}
        self._tz: dict[int, ZoneInfo] = {}
        self._codes: dict[int, str] = {}

    async def load(self) -> None:
        periods: dict[int, list[Period]] = {}
        calendar: dict[int, list[CalendarEntry]] = {}
        async with self._sessions() as s:
            tz = {}
            for sid, code, zone in (await s.execute(select(School.id, School.code, School.timezone))).all():
                try:
                    tz[sid] = ZoneInfo(zone)
                except (KeyError, ValueError):
                    tz[sid] = ZoneInfo("UTC")
                self._codes[sid] = code
            for p in (await s.execute(select(BellPeriod))).scalars():
                periods.setdefault(p.school_id, []).append(
                    Period(p.name, p.weekday, p.start_time, p.end_time, p.room_id)
                )
            for c in (await s.execute(select(CalendarDay))).scalars():
                kind: CalendarKind = c.kind  # type: ignore[assignment]  # stored as the enum's value
                calendar.setdefault(c.school_id, []).append(
                    CalendarEntry(kind, c.start_date, c.end_date, c.name)
                )
        self._periods, self._calendar, self._tz = periods, calendar, tz

    def lesson(self, school_id: int, room_id: int | None, at: datetime) -> tuple[bool, str | None]:
        state = lesson_at(
            self._periods.get(school_id, []),
            self._calendar.get(school_id, []),
            at,
            self._tz.get(school_id, ZoneInfo("UTC")),
            room_id,
        )
        return state.in_lesson, state.period

    def expected_offline(self, ref: DeviceRef, at: datetime) -> bool:
        """Offline is expected when the device's room has no lesson now (or the day is a holiday)."""
        return not self.lesson(ref.school_id, ref.room_id, at)[0]

    def school_ids(self) -> list[int]:
        return list(self._tz)

    def school_code(self, school_id: int) -> str:
        return self._codes.get(school_id, str(school_id))
