"""Timetable rules: is a lesson on in a room at a given moment, and which period?

Pure functions over plain values, so monitoring, rollouts, presence and the simulators share one answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from fleet.domain.enums import CalendarKind


@dataclass(frozen=True, slots=True)
class Period:
    name: str
    weekday: int  # 0 = Monday ... 6 = Sunday
    start: time
    end: time
    room_id: int | None = None  # None: the school's bell schedule; set: a room-specific override


@dataclass(frozen=True, slots=True)
class CalendarEntry:
    kind: CalendarKind
    start: date
    end: date  # inclusive
    name: str = ""

    def covers(self, day: date) -> bool:
        return self.start <= day <= self.end


@dataclass(frozen=True, slots=True)
class LessonState:
    in_lesson: bool
    period: str | None
    reason: str  # "lesson", "between_periods", "weekend_or_no_periods", "holiday", "outside_term"
    exam_day: bool = False
    local_time: datetime | None = None


def day_kind(calendar: Iterable[CalendarEntry], day: date) -> tuple[bool, bool, bool]:
    """(in_term, holiday, exam_day) for a local date; no term entries at all means always in term."""
    entries = list(calendar)
    terms = [e for e in entries if e.kind == CalendarKind.TERM]
    in_term = not terms or any(e.covers(day) for e in terms)
    holiday = any(e.kind == CalendarKind.HOLIDAY and e.covers(day) for e in entries)
    exam = any(e.kind == CalendarKind.EXAM_DAY and e.covers(day) for e in entries)
    return in_term, holiday, exam


def periods_for_room(periods: Iterable[Period], room_id: int | None) -> list[Period]:
    """A room's own periods when it has any, else the school's bell schedule."""
    all_periods = list(periods)
    own = [p for p in all_periods if room_id is not None and p.room_id == room_id]
    return own if own else [p for p in all_periods if p.room_id is None]


def lesson_at(
    periods: Iterable[Period],
    calendar: Iterable[CalendarEntry],
    at: datetime,
    tz: str | ZoneInfo,
    room_id: int | None = None,
) -> LessonState:
    """Whether a lesson is on at `at` (aware datetime) in the room, by the school's local time."""
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    if at.tzinfo is None:
        raise ValueError("lesson_at needs an aware datetime")
    local = at.astimezone(zone)
    in_term, holiday, exam = day_kind(calendar, local.date())
    if holiday:
        return LessonState(False, None, "holiday", exam, local)
    if not in_term:
        return LessonState(False, None, "outside_term", exam, local)
    today = [p for p in periods_for_room(periods, room_id) if p.weekday == local.weekday()]
    if not today:
        return LessonState(False, None, "weekend_or_no_periods", exam, local)
    now = local.time()
    for p in sorted(today, key=lambda p: p.start):
        if p.start <= now < p.end:
            return LessonState(True, p.name, "lesson", exam, local)
    return LessonState(False, None, "between_periods", exam, local)


def validate_period(start: time, end: time) -> None:
    if not start < end:
        raise ValueError(f"period must end after it starts ({start} >= {end})")
