"""Rollout rules as pure functions: group plans, thresholds, the timetable gate, maintenance windows, the
per-school byte budget and a token bucket. The service and the artifact server share these answers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from fleet.domain.timetable import CalendarEntry, Period, day_kind, lesson_at, periods_for_room


class RolloutStatus(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    ABORTED = "aborted"
    COMPLETED = "completed"


class DeviceUpdateState(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"  # a download command was sent; the device has not started yet
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"  # image staged and verified; waiting for an install window
    INSTALLING = "installing"  # install command sent: installing or rebooting
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"


# States a device never leaves; every other state is "in flight" or waiting.
FINAL_STATES = frozenset(
    {
        DeviceUpdateState.SUCCEEDED,
        DeviceUpdateState.FAILED,
        DeviceUpdateState.ROLLED_BACK,
        DeviceUpdateState.CANCELLED,
    }
)
# States that hold a download slot at the school (the concurrency cap counts these).
DOWNLOAD_SLOT_STATES = frozenset({DeviceUpdateState.SCHEDULED, DeviceUpdateState.DOWNLOADING})


class Window(StrEnum):
    """When a phase may run. OUTSIDE_LESSONS: whenever no lesson is on in the room (between periods too).
    AFTER_SCHOOL: only after the room's last period of the day, or on a day without periods."""

    OUTSIDE_LESSONS = "outside_lessons"
    AFTER_SCHOOL = "after_school"


class GroupStrategy(StrEnum):
    PER_SCHOOL = "per_school"
    PERCENT = "percent"


@dataclass(frozen=True, slots=True)
class GroupPlan:
    """Canary first (a device count, or a percentage when canary_percent is set), then the rest."""

    canary_size: int = 1
    canary_percent: float | None = None
    strategy: GroupStrategy = GroupStrategy.PER_SCHOOL
    # Cumulative percentages of the devices after the canary, for the percent strategy; the last is 100.
    percents: tuple[float, ...] = (25.0, 50.0, 100.0)


@dataclass(frozen=True, slots=True)
class PlannedGroup:
    name: str
    kind: str  # canary | school | percent
    device_ids: tuple[int, ...]
    school_id: int | None = None
    percent: float | None = None


def plan_groups(devices: Sequence[tuple[int, int]], plan: GroupPlan) -> list[PlannedGroup]:
    """Split (device_id, school_id) pairs into groups; deterministic (ordered by device id)."""
    ordered = sorted(devices)
    if not ordered:
        return []
    if plan.canary_percent is not None:
        n_canary = max(1, math.ceil(len(ordered) * plan.canary_percent / 100))
    else:
        n_canary = max(1, plan.canary_size)
    # Canary devices are spread over schools round-robin, so one school's quirk shows up early.
    by_school: dict[int, list[int]] = {}
    for dev, school in ordered:
        by_school.setdefault(school, []).append(dev)
    canary: list[int] = []
    queues = [list(v) for _, v in sorted(by_school.items())]
    while len(canary) < n_canary and any(queues):
        for q in queues:
            if q and len(canary) < n_canary:
                canary.append(q.pop(0))
    groups = [PlannedGroup("canary", "canary", tuple(sorted(canary)))]
    chosen = set(canary)
    rest = [(d, s) for d, s in ordered if d not in chosen]
    if not rest:
        return groups
    if plan.strategy == GroupStrategy.PER_SCHOOL:
        schools: dict[int, list[int]] = {}
        for dev, school in rest:
            schools.setdefault(school, []).append(dev)
        for school, devs in sorted(schools.items()):
            groups.append(PlannedGroup(f"school {school}", "school", tuple(devs), school_id=school))
        return groups
    done = 0
    for pct in plan.percents:
        upto = min(len(rest), math.ceil(len(rest) * pct / 100))
        if upto > done:
            groups.append(
                PlannedGroup(f"{pct:g}%", "percent", tuple(d for d, _ in rest[done:upto]), percent=pct)
            )
            done = upto
    if done < len(rest):
        groups.append(PlannedGroup("100%", "percent", tuple(d for d, _ in rest[done:]), percent=100.0))
    return groups


@dataclass(frozen=True, slots=True)
class GroupTally:
    total: int
    succeeded: int
    failed: int  # final failures: failed after the last retry, or rolled back
    in_flight: int


class GroupVerdict(StrEnum):
    WAIT = "wait"
    ADVANCE = "advance"  # the success threshold is reached: start the next group
    PAUSE = "pause"  # the error threshold is reached


def judge_group(t: GroupTally, success_threshold: float, error_threshold: float) -> GroupVerdict:
    """Error first: a group that is both over its error threshold and its success threshold pauses."""
    if t.total == 0:
        return GroupVerdict.ADVANCE
    if t.failed > 0 and t.failed / t.total >= error_threshold:
        return GroupVerdict.PAUSE
    if t.succeeded / t.total >= success_threshold:
        return GroupVerdict.ADVANCE
    return GroupVerdict.WAIT


# --- timetable gate -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    weekday: int  # 0 = Monday
    start: time
    end: time

    def covers(self, local: datetime) -> bool:
        return local.weekday() == self.weekday and self.start <= local.time() < self.end


def parse_windows(raw: Iterable[dict[str, object]]) -> tuple[MaintenanceWindow, ...]:
    """From the JSON column: [{"weekday": 0, "start": "16:30", "end": "22:00"}]; raises ValueError."""
    out = []
    for i, w in enumerate(raw):
        try:
            weekday: Any = w["weekday"]  # unchecked JSON: int() is the check (TypeError, ValueError)
            wd = int(weekday)
            start = time.fromisoformat(str(w["start"]))
            end = time.fromisoformat(str(w["end"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"windows[{i}]: needs weekday 0-6 and start/end as HH:MM ({err})") from None
        if not 0 <= wd <= 6:
            raise ValueError(f"windows[{i}].weekday: must be 0 (Monday) to 6")
        if not start < end:
            raise ValueError(f"windows[{i}]: end must be after start")
        out.append(MaintenanceWindow(wd, start, end))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SchoolTimetable:
    timezone: str
    periods: tuple[Period, ...] = ()
    calendar: tuple[CalendarEntry, ...] = ()
    windows: tuple[MaintenanceWindow, ...] = ()


@dataclass(frozen=True, slots=True)
class Gate:
    open: bool
    reason: str  # "open" or why not: lesson, exam_day, school_day, maintenance_window, too_close_to_lesson
    # When open: the latest moment the phase may still be running (next lesson start or window end).
    until: datetime | None = None


# How far ahead the gate looks for the next lesson when nothing closes sooner: a day.
GATE_HORIZON = timedelta(hours=24)


def _next_lesson_start(tt: SchoolTimetable, room_id: int | None, at: datetime) -> datetime | None:
    zone = ZoneInfo(tt.timezone)
    local = at.astimezone(zone)
    room_periods = periods_for_room(tt.periods, room_id)
    for offset in range(2):
        day = (local + timedelta(days=offset)).date()
        in_term, holiday, _ = day_kind(tt.calendar, day)
        if holiday or not in_term:
            continue
        starts = sorted(p.start for p in room_periods if p.weekday == day.weekday())
        for s in starts:
            cand = datetime.combine(day, s, tzinfo=zone)
            if cand > local:
                return cand
    return None


def _last_lesson_end_today(tt: SchoolTimetable, room_id: int | None, local: datetime) -> time | None:
    in_term, holiday, _ = day_kind(tt.calendar, local.date())
    if holiday or not in_term:
        return None
    ends = [p.end for p in periods_for_room(tt.periods, room_id) if p.weekday == local.weekday()]
    return max(ends) if ends else None


def _next_midnight(local: datetime) -> datetime:
    return datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=local.tzinfo)


def gate(tt: SchoolTimetable, room_id: int | None, at: datetime, mode: Window, min_seconds: float) -> Gate:
    """May a phase that takes about `min_seconds` start now in this room? And until when may it run?"""
    state = lesson_at(tt.periods, tt.calendar, at, tt.timezone, room_id=room_id)
    if state.exam_day:
        return Gate(False, "exam_day")
    if state.in_lesson:
        return Gate(False, "lesson")
    local = state.local_time or at.astimezone(ZoneInfo(tt.timezone))
    if mode == Window.AFTER_SCHOOL:
        last_end = _last_lesson_end_today(tt, room_id, local)
        if last_end is not None and local.time() < last_end:
            return Gate(False, "school_day")
    # The phase must end before the next lesson, before midnight (tomorrow may be an exam day), and
    # inside a maintenance window when the school has any.
    limits = [_next_midnight(local)]
    nxt = _next_lesson_start(tt, room_id, at)
    if nxt is not None:
        limits.append(nxt)
    if tt.windows:
        win = next((w for w in tt.windows if w.covers(local)), None)
        if win is None:
            return Gate(False, "maintenance_window")
        limits.append(datetime.combine(local.date(), win.end, tzinfo=local.tzinfo))
    until = min(limits)
    if (until - local).total_seconds() < min_seconds:
        return Gate(False, "too_close_to_lesson" if nxt is not None and until == nxt else "window_too_short")
    return Gate(True, "open", until.astimezone(at.tzinfo))


# --- bandwidth --------------------------------------------------------------------------------------------


def school_budget_bytes_per_second(uplink_mbps: int, share: float, cap_bytes_per_second: int | None) -> int:
    """The byte rate updates may use at one school: a share of its uplink, and at most an absolute cap."""
    budget = int(uplink_mbps * 1_000_000 / 8 * share)
    if cap_bytes_per_second is not None:
        budget = min(budget, cap_bytes_per_second)
    return max(1, budget)


@dataclass(slots=True)
class TokenBucket:
    """A token bucket over an injected monotonic time: `take(n, now)` answers how long to wait first.

    Tokens may go negative (the wait pays the debt), so a waiter never starves behind smaller requests.
    """

    rate: float  # bytes per second
    burst: float  # bytes
    tokens: float = field(default=0.0)
    last: float | None = None

    def take(self, n: int, now: float) -> float:
        if self.last is None:
            self.last = now
            self.tokens = self.burst
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
