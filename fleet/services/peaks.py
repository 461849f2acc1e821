"""Lesson peaks of one school on one date, per bell period, from the usage roll-ups the ingest writes; and
the live district picture `labfleet top` shows.

- concurrency: `usage_concurrency` (peak devices online and terminal sessions per school, UTC day and period;
  the device plane records it while a period runs);
- bandwidth: `usage_bytes` (bytes up and down per school and room per 5-minute bucket), against the school's
  configured uplink;
- expected: the devices the timetable expects online in that period: enrolled (MQTT credentials not revoked)
  and placed in a room that has a lesson then, the same devices `labfleet_devices_expected_online` counts.
  Placement is today's, so for past dates it is the present inventory's view of that day.

Reads only; the reports read the same tables the same way (fleet.services.reports.data).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.clock import as_utc
from fleet.domain.enums import DeviceStatus
from fleet.domain.peaks import PeriodWindow, day_windows, peak_rate, utilisation_pct
from fleet.domain.permissions import Permission, Principal
from fleet.domain.timetable import day_kind, lesson_at
from fleet.errors import InvalidInput, NotFound
from fleet.observability.metrics import FleetSnapshot, IngestSummary, SchoolState
from fleet.persistence.models import Device, Room, School
from fleet.persistence.models_mqtt import (
    BYTES_BUCKET_SECONDS,
    Alert,
    DeviceCredential,
    UsageBytes,
    UsageConcurrency,
)
from fleet.services.common import check_school, require, scope_schools
from fleet.services.timetable import load_school_timetable

# The furthest date asked about: a decade either way covers any school year and rejects nonsense early.
MAX_YEARS_AWAY = 10


@dataclass(frozen=True, slots=True)
class SchoolRef:
    id: int
    code: str
    name: str
    timezone: str
    uplink_mbps: int


@dataclass(frozen=True, slots=True)
class CalendarNote:
    kind: str
    name: str
    start: date
    end: date


@dataclass(frozen=True, slots=True)
class DayInfo:
    local_date: date
    weekday: int  # 0 = Monday
    kind: str  # school_day, exam_day, holiday, outside_term, no_periods
    in_term: bool
    holiday: bool
    exam_day: bool
    calendar: tuple[CalendarNote, ...]


@dataclass(frozen=True, slots=True)
class PeriodPeaks:
    """One bell period: when, whether lessons ran, and its peaks (None where nothing was recorded)."""

    name: str
    start: datetime
    end: datetime
    status: str  # past, in_progress, upcoming
    lesson: bool  # the bell rang for lessons (False on holidays and outside term)
    rooms_in_lesson: int
    expected_online: int
    peak_online: int | None
    peak_sessions: int | None
    online_vs_expected_pct: float | None
    peak_bytes_per_second: float | None
    peak_up_bytes_per_second: float | None
    peak_down_bytes_per_second: float | None
    peak_bucket_start: datetime | None
    uplink_utilisation_pct: float | None
    bytes_up: int
    bytes_down: int


@dataclass(frozen=True, slots=True)
class SchoolPeaks:
    school: SchoolRef
    day: DayInfo
    generated_at: datetime
    bucket_seconds: int
    devices_placed: int  # enrolled devices placed in a room: the most that can ever be expected
    periods: tuple[PeriodPeaks, ...]


async def find_school(session: AsyncSession, principal: Principal, ref: str) -> School:
    """A school by id ("12") or code ("s001") within the caller's scope; missing and out of scope look
    alike."""
    ref = ref.strip()
    if not ref:
        raise InvalidInput(
            "school is required: its id or code", details=[{"field": "school", "reason": "empty"}]
        )
    stmt = (
        select(School).where(School.id == int(ref))
        if ref.isdigit() and len(ref) <= 10
        else select(School).where(School.code == ref)
    )
    school = (await session.execute(stmt)).scalar_one_or_none()
    if school is None:
        raise NotFound(f"school {ref} not found")
    check_school(principal, school.id, "school", ref)
    return school


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


async def school_peaks(
    session: AsyncSession, principal: Principal, school_ref: str, day: date | None, now: datetime
) -> SchoolPeaks:
    """Per-period peaks of one school on `day` (its local date; today there when None)."""
    require(principal, Permission.READ_OPERATIONS)
    school = await find_school(session, principal, school_ref)
    tz = _zone(school.timezone)
    today = now.astimezone(tz).date()
    day = day or today
    if abs(day.year - today.year) > MAX_YEARS_AWAY:
        raise InvalidInput(
            f"date {day} is more than {MAX_YEARS_AWAY} years from today",
            details=[{"field": "date", "reason": "out of range"}],
        )
    periods, calendar = await load_school_timetable(session, school.id)
    in_term, holiday, exam = day_kind(calendar, day)
    windows = day_windows(periods, day, tz)
    kind = (
        "holiday"
        if holiday
        else "outside_term"
        if not in_term
        else "no_periods"
        if not windows
        else "exam_day"
        if exam
        else "school_day"
    )
    notes = tuple(CalendarNote(str(c.kind), c.name, c.start, c.end) for c in calendar if c.covers(day))
    info = DayInfo(day, day.weekday(), kind, in_term, holiday, exam, notes)

    rooms = [
        rid for (rid,) in (await session.execute(select(Room.id).where(Room.school_id == school.id))).all()
    ]
    placed = dict(
        (
            await session.execute(
                select(Device.room_id, func.count())
                .join(DeviceCredential, DeviceCredential.device_id == Device.id)
                .where(
                    Device.school_id == school.id,
                    Device.room_id.is_not(None),
                    DeviceCredential.revoked_at.is_(None),
                )
                .group_by(Device.room_id)
            )
        ).all()
    )

    concurrency = await _concurrency(session, school.id, windows)
    buckets = await _buckets(session, school.id, windows)
    width = timedelta(seconds=BYTES_BUCKET_SECONDS)
    out = []
    for w in windows:
        in_lesson = [r for r in rooms if lesson_at(periods, calendar, w.midpoint, tz, r).in_lesson]
        expected = sum(placed.get(r, 0) for r in in_lesson)
        conc = concurrency.get(w.name)
        peak = peak_rate(buckets, w.start, w.end, BYTES_BUCKET_SECONDS, now)
        recorded = peak.bucket_start is not None
        up = sum(u for b, (u, _) in buckets.items() if b < w.end and b + width > w.start)
        down = sum(d for b, (_, d) in buckets.items() if b < w.end and b + width > w.start)
        out.append(
            PeriodPeaks(
                name=w.name,
                start=w.start,
                end=w.end,
                status="past" if now >= w.end else "in_progress" if now >= w.start else "upcoming",
                lesson=not holiday and in_term,
                rooms_in_lesson=len(in_lesson),
                expected_online=expected,
                peak_online=conc[0] if conc else None,
                peak_sessions=conc[1] if conc else None,
                online_vs_expected_pct=round(conc[0] / expected * 100, 1) if conc and expected else None,
                peak_bytes_per_second=round(peak.bytes_per_second, 1) if recorded else None,
                peak_up_bytes_per_second=round(peak.up_bytes_per_second, 1) if recorded else None,
                peak_down_bytes_per_second=round(peak.down_bytes_per_second, 1) if recorded else None,
                peak_bucket_start=peak.bucket_start,
                uplink_utilisation_pct=_round(
                    utilisation_pct(peak.busier_direction_bytes_per_second, school.uplink_mbps)
                )
                if recorded
                else None,
                bytes_up=up,
                bytes_down=down,
            )
        )
    return SchoolPeaks(
        school=SchoolRef(school.id, school.code, school.name, school.timezone, school.uplink_mbps),
        day=info,
        generated_at=now,
        bucket_seconds=BYTES_BUCKET_SECONDS,
        devices_placed=sum(placed.values()),
        periods=tuple(out),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def _concurrency(
    session: AsyncSession, school_id: int, windows: list[PeriodWindow]
) -> dict[str, tuple[int, int]]:
    """Peak (online, sessions) per period name; the roll-up keys rows by UTC date, so a window's UTC dates."""
    days = sorted(set().union(*(w.utc_dates() for w in windows))) if windows else []
    if not days:
        return {}
    names = {w.name for w in windows}
    out: dict[str, tuple[int, int]] = {}
    rows = await session.execute(
        select(UsageConcurrency.period, UsageConcurrency.peak_online, UsageConcurrency.peak_sessions).where(
            UsageConcurrency.school_id == school_id,
            UsageConcurrency.day.in_(days),
            UsageConcurrency.period.in_(sorted(names)),
        )
    )
    for period, online, sessions in rows.all():
        prev = out.get(period, (0, 0))
        out[period] = (max(prev[0], int(online)), max(prev[1], int(sessions)))
    return out


async def _buckets(
    session: AsyncSession, school_id: int, windows: list[PeriodWindow]
) -> dict[datetime, tuple[int, int]]:
    """Bytes (up, down) per bucket start, summed over the school's rooms, across the day's periods."""
    if not windows:
        return {}
    lo = min(w.start for w in windows).astimezone(UTC) - timedelta(seconds=BYTES_BUCKET_SECONDS)
    hi = max(w.end for w in windows).astimezone(UTC)
    rows = await session.execute(
        select(UsageBytes.bucket_start, func.sum(UsageBytes.bytes_up), func.sum(UsageBytes.bytes_down))
        .where(UsageBytes.school_id == school_id, UsageBytes.bucket_start > lo, UsageBytes.bucket_start < hi)
        .group_by(UsageBytes.bucket_start)
    )
    acc: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])
    for start, up, down in rows.all():
        cell = acc[as_utc(start)]
        cell[0] += int(up or 0)
        cell[1] += int(down or 0)
    return {k: (v[0], v[1]) for k, v in acc.items()}


# --- the live district picture (labfleet top) --------------------------------------------------------------
# Below this many seconds into the current 5-minute bucket, the live rate also counts the previous bucket:
# a rate over a few seconds of a fresh bucket is noise.
MIN_LIVE_WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class LiveSchool:
    id: int
    code: str
    name: str
    uplink_mbps: int
    in_service: int  # lifecycle status in_service, from the devices table (not "has an MQTT login")
    online: int | None
    expected_online: int | None
    unexpectedly_offline: int | None
    lessons_in_progress: int | None
    current_period: str | None
    active_sessions: int | None
    bytes_per_second: float
    up_bytes_per_second: float
    down_bytes_per_second: float
    uplink_utilisation_pct: float | None
    alerts_open: dict[str, int]


@dataclass(frozen=True, slots=True)
class LiveOverview:
    generated_at: datetime
    snapshot_age_seconds: float | None
    rate_window_seconds: float
    schools: tuple[LiveSchool, ...]
    alerts_open: dict[str, int]
    ingest: IngestSummary | None


async def live_overview(
    session: AsyncSession,
    principal: Principal,
    *,
    snapshot: FleetSnapshot | None,
    ingest: IngestSummary | None,
    now: datetime,
) -> LiveOverview:
    """Every school in the caller's scope now: presence and lessons from the in-memory fleet snapshot, the
    recent byte rate from the usage roll-up, open alerts from the alerts table, ingest from this process."""
    require(principal, Permission.READ_OPERATIONS)
    stmt: Any = scope_schools(
        select(School.id, School.code, School.name, School.uplink_mbps),
        principal,
        School.id,
    )
    schools = (await session.execute(stmt.order_by(School.code))).all()
    ids = [sid for sid, *_ in schools]

    epoch = int(now.timestamp())
    current = datetime.fromtimestamp(epoch - epoch % BYTES_BUCKET_SECONDS, UTC)
    elapsed = max(1.0, (now - current).total_seconds())
    since = current if elapsed >= MIN_LIVE_WINDOW_S else current - timedelta(seconds=BYTES_BUCKET_SECONDS)
    window = (now - since).total_seconds()
    traffic: dict[int, tuple[int, int]] = {}
    alerts: dict[int, dict[str, int]] = defaultdict(dict)
    in_service: dict[int, int] = {}
    if ids:
        # "In service" is the lifecycle status, as the inventory counts it; the fleet snapshot's cells count
        # devices holding credentials, which a load test's enrolled-but-unplaced fleet does not match.
        for sid, n in (
            await session.execute(
                select(Device.school_id, func.count())
                .where(Device.school_id.in_(ids), Device.status == DeviceStatus.IN_SERVICE.value)
                .group_by(Device.school_id)
            )
        ).all():
            in_service[sid] = int(n)
        for sid, up, down in (
            await session.execute(
                select(UsageBytes.school_id, func.sum(UsageBytes.bytes_up), func.sum(UsageBytes.bytes_down))
                .where(UsageBytes.school_id.in_(ids), UsageBytes.bucket_start >= since)
                .group_by(UsageBytes.school_id)
            )
        ).all():
            traffic[sid] = (int(up or 0), int(down or 0))
        for sid, sev, n in (
            await session.execute(
                select(Alert.school_id, Alert.severity, func.count())
                .where(Alert.school_id.in_(ids), Alert.status != "resolved")
                .group_by(Alert.school_id, Alert.severity)
            )
        ).all():
            alerts[sid][sev] = int(n)

    presence: dict[str, list[int]] = {}
    state: dict[str, SchoolState] = {}
    if snapshot is not None:
        for p in snapshot.presence:
            cell = presence.setdefault(p.school, [0, 0, 0, 0])
            cell[0] += p.in_service
            cell[1] += p.online
            cell[2] += p.expected_online
            cell[3] += p.unexpectedly_offline
        state = {s.school: s for s in snapshot.schools}

    out = []
    for sid, code, name, mbps in schools:
        up, down = traffic.get(sid, (0, 0))
        pres = presence.get(code, [0, 0, 0, 0]) if snapshot is not None else None
        st = state.get(code)
        out.append(
            LiveSchool(
                id=sid,
                code=code,
                name=name,
                uplink_mbps=mbps,
                in_service=in_service.get(sid, 0),
                online=pres[1] if pres else None,
                expected_online=pres[2] if pres else None,
                unexpectedly_offline=pres[3] if pres else None,
                lessons_in_progress=st.lessons_in_progress if st else (0 if snapshot is not None else None),
                current_period=st.current_period if st else None,
                active_sessions=st.active_sessions if st else (0 if snapshot is not None else None),
                bytes_per_second=round((up + down) / window, 1),
                up_bytes_per_second=round(up / window, 1),
                down_bytes_per_second=round(down / window, 1),
                uplink_utilisation_pct=_round(utilisation_pct(max(up, down) / window, mbps)),
                alerts_open=dict(sorted(alerts.get(sid, {}).items())),
            )
        )
    total: dict[str, int] = defaultdict(int)
    for per in alerts.values():
        for sev, n in per.items():
            total[sev] += n
    return LiveOverview(
        generated_at=now,
        snapshot_age_seconds=round(max(0.0, now.timestamp() - snapshot.taken_at), 1) if snapshot else None,
        rate_window_seconds=window,
        schools=tuple(out),
        alerts_open=dict(sorted(total.items())),
        ingest=ingest,
    )
