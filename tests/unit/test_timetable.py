"""lesson_at: periods, room overrides, holidays, exam days, terms and time zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from fleet.domain.enums import CalendarKind
from fleet.domain.timetable import CalendarEntry, Period, lesson_at

MON = 0
PERIODS = [
    Period("P1", MON, time(8, 0), time(8, 40)),
    Period("P2", MON, time(8, 50), time(9, 30)),
    Period("Lab", MON, time(13, 0), time(14, 0), room_id=7),
]
TERM = [CalendarEntry(CalendarKind.TERM, date(2026, 9, 1), date(2027, 1, 20))]


def at(h: int, m: int, day: int = 7) -> datetime:
    return datetime(2026, 9, day, h, m, tzinfo=UTC)  # 2026-09-07 is a Monday


@pytest.mark.parametrize(
    ("when", "in_lesson", "period", "reason"),
    [
        (at(7, 59), False, None, "between_periods"),
        (at(8, 0), True, "P1", "lesson"),
        (at(8, 39), True, "P1", "lesson"),
        (at(8, 40), False, None, "between_periods"),  # the end bell ends the lesson
        (at(9, 0), True, "P2", "lesson"),
        (at(8, 0, day=8), False, None, "weekend_or_no_periods"),  # Tuesday has no periods here
    ],
)
def test_school_bell_schedule(when: datetime, in_lesson: bool, period: str | None, reason: str) -> None:
    state = lesson_at(PERIODS, TERM, when, "UTC")
    assert (state.in_lesson, state.period, state.reason) == (in_lesson, period, reason)


def test_room_with_its_own_periods_ignores_the_school_bells() -> None:
    assert lesson_at(PERIODS, TERM, at(8, 10), "UTC", room_id=7).in_lesson is False
    assert lesson_at(PERIODS, TERM, at(13, 30), "UTC", room_id=7).period == "Lab"
    assert lesson_at(PERIODS, TERM, at(8, 10), "UTC", room_id=8).period == "P1"


def test_holiday_and_outside_term_have_no_lessons_and_exam_days_are_flagged() -> None:
    cal = TERM + [
        CalendarEntry(CalendarKind.HOLIDAY, date(2026, 10, 1), date(2026, 10, 7)),
        CalendarEntry(CalendarKind.EXAM_DAY, date(2026, 9, 14), date(2026, 9, 14)),
    ]
    assert lesson_at(PERIODS, cal, datetime(2026, 10, 5, 8, 10, tzinfo=UTC), "UTC").reason == "holiday"
    assert lesson_at(PERIODS, cal, datetime(2027, 2, 1, 8, 10, tzinfo=UTC), "UTC").reason == "outside_term"
    exam = lesson_at(PERIODS, cal, at(8, 10, day=14), "UTC")
    assert exam.in_lesson and exam.exam_day


def test_local_time_decides_not_utc() -> None:
    # 00:10 UTC is 08:10 in Shanghai (UTC+8): first period.
    state = lesson_at(PERIODS, TERM, datetime(2026, 9, 7, 0, 10, tzinfo=UTC), "Asia/Shanghai")
    assert state.in_lesson and state.period == "P1"
    assert lesson_at(PERIODS, TERM, at(8, 10), "Asia/Shanghai").in_lesson is False


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        lesson_at(PERIODS, TERM, datetime(2026, 9, 7, 8, 10), "UTC")
