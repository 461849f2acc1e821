"""What every report reads: the caller's scope, devices, models, rooms, lifecycle timelines, presence, usage.

Reports only read. They read the MQTT plane's tables (presence, alerts, usage roll-ups) and the rollout
tables,
and never write to any of them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from fleet.domain import timebounds
from fleet.domain.clock import as_utc
from fleet.domain.enums import DeviceStatus
from fleet.domain.permissions import Principal
from fleet.errors import InvalidInput, NotFound
from fleet.i18n import _
from fleet.persistence.models import Device, DeviceModel, DeviceTransition, District, Room, School
from fleet.persistence.models_mqtt import Alert, PresenceTransition, UsageActive
from fleet.persistence.models_rollouts import RolloutDevice
from fleet.services.reports.model import Progress, Report, Section, SummaryItem
from fleet.settings import ReportSettings

log = logging.getLogger(__name__)

# A report covers at most ten years: enough for any service life, and it bounds the scans a request can ask
# for.
MAX_RANGE_DAYS = 3660
# Without a start date a report covers the year up to and including its end date.
DEFAULT_RANGE_DAYS = 365
# Reliability figures count device-months of 365.25 / 12 days, so a month is the same length every year.
DAYS_PER_MONTH = 365.25 / 12
# Statuses in which a device is out in a school (placed, counted as deployed).
FIELDED = frozenset({DeviceStatus.PROVISIONED, DeviceStatus.IN_SERVICE, DeviceStatus.IN_REPAIR})
GONE = frozenset({DeviceStatus.RETIRED, DeviceStatus.LOST})
# A device's part in a rollout ends in one of these; cancelled ones never tried, so they do not count.
FW_FINISHED = ("succeeded", "failed", "rolled_back")


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """What the caller asked for; every field is optional."""

    school: int | None = None
    district: int | None = None
    start: date | None = None
    end: date | None = None
    # The equipment budget the AI share is measured against (budget report); overrides the setting.
    budget: Decimal | None = None


@dataclass(frozen=True, slots=True)
class SchoolInfo:
    id: int
    district_id: int
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class Scope:
    """The schools and dates a report covers, after the caller's scope and filters are applied."""

    schools: dict[int, SchoolInfo]
    # True when no school restriction is needed in SQL (a district-wide caller without filters).
    all_schools: bool
    start: date
    end: date
    filters: dict[str, str]
    district_names: tuple[str, ...] = ()

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time(), tzinfo=UTC)

    @property
    def end_at(self) -> datetime:
        """Exclusive: midnight UTC after the end date."""
        return datetime.combine(self.end + timedelta(days=1), time(), tzinfo=UTC)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def district_ids(self) -> set[int]:
        return {s.district_id for s in self.schools.values()}

    def where(self, column: Any) -> ColumnElement[bool] | None:
        if self.all_schools:
            return None
        condition: ColumnElement[bool] = column.in_(sorted(self.schools) or [-1])
        return condition


def _apply(stmt: Any, clause: ColumnElement[bool] | None) -> Any:
    return stmt if clause is None else stmt.where(clause)


async def resolve_scope(
    session: AsyncSession, principal: Principal, query: ReportQuery, today: date
) -> Scope:
    """Intersect the caller's schools with the filters; a school outside the caller's scope looks missing."""
    end = query.end or today
    start = query.start or end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if start > end:
        raise InvalidInput(
            f"start {start} is after end {end}", details={"start": str(start), "end": str(end)}
        )
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise InvalidInput(f"a report covers at most {MAX_RANGE_DAYS} days; narrow start..end")
    stmt = select(School.id, School.district_id, School.code, School.name)
    if not principal.district_wide:
        stmt = stmt.where(School.id.in_(sorted(principal.school_ids) or [-1]))
    visible = {r.id: SchoolInfo(r.id, r.district_id, r.code, r.name) for r in await session.execute(stmt)}
    filters: dict[str, str] = {}
    schools = visible
    if query.district is not None:
        name = (await session.execute(select(District.name).where(District.id == query.district))).scalar()
        if name is None or (
            not principal.district_wide and not any(s.district_id == query.district for s in visible.values())
        ):
            raise NotFound(f"district {query.district} not found")
        schools = {k: v for k, v in schools.items() if v.district_id == query.district}
        filters["district"] = f"{name} (id {query.district})"
    if query.school is not None:
        if query.school not in visible:
            raise NotFound(f"school {query.school} not found")
        if query.school not in schools:
            raise InvalidInput(f"school {query.school} is not in district {query.district}")
        schools = {query.school: visible[query.school]}
        s = schools[query.school]
        filters["school"] = f"{s.name} ({s.code}, id {s.id})"
    if not principal.district_wide:
        filters["caller scope"] = ", ".join(v.code for _, v in sorted(visible.items())) or "no schools"
    all_schools = principal.district_wide and query.district is None and query.school is None
    district_ids = sorted({s.district_id for s in schools.values()})
    names = tuple(
        n
        for (n,) in await session.execute(select(District.name).where(District.id.in_(district_ids or [-1])))
    )
    return Scope(
        schools=schools,
        all_schools=all_schools,
        start=start,
        end=end,
        filters=filters,
        district_names=tuple(sorted(names)),
    )


@dataclass(frozen=True, slots=True)
class Dev:
    id: int
    asset_tag: str
    serial_number: str
    model_id: int
    school_id: int
    room_id: int | None
    status: str  # current status
    order_number: str | None
    purchase_date: date | None
    unit_cost: Decimal | None
    funding_source: str | None
    ownership: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: int
    vendor: str
    model_number: str
    kind: str
    unit_price: Decimal
    warranty_months: int
    supplier: str

    @property
    def label(self) -> str:
        return f"{self.vendor} {self.model_number}"


@dataclass(frozen=True, slots=True)
class RoomInfo:
    id: int
    school_id: int
    name: str
    kind: str
    tier: str | None
    capacity: int


Timeline = list[tuple[datetime, str]]


def add_months(d: date, months: int) -> date:
    """The same day `months` later, clamped to the month's last day (31 Jan + 1 month = 28/29 Feb)."""
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    if year > date.max.year:  # a stored 9999-12-31 plus a warranty: the end of the calendar, not a 500
        return date.max
    for day in (d.day, 30, 29, 28):
        try:
            return date(year, month, min(d.day, day))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def full_months_between(a: date, b: date) -> int:
    """Whole calendar months from a to b (0 when b < a): 2024-03-15 -> 2026-09-07 is 29."""
    if b < a:
        return 0
    months = (b.year - a.year) * 12 + (b.month - a.month)
    if add_months(a, months) > b:
        months -= 1
    return max(months, 0)


def status_at(dev: Dev, timeline: Timeline, at: datetime) -> str | None:
    """The device's status just before `at`, from its lifecycle history; None if it did not exist yet."""
    status: str | None = None
    for t, s in timeline:
        if t >= at:
            break
        status = s
    if status is None and not timeline and dev.created_at < at:
        return dev.status  # no history recorded: trust the current status
    return status


def seconds_in(timeline: Timeline, statuses: frozenset[str], start: datetime, end: datetime) -> float:
    """Seconds within [start, end) that the device spent in one of `statuses`."""
    total = 0.0
    for i, (t, s) in enumerate(timeline):
        if s not in statuses:
            continue
        seg_end = timeline[i + 1][0] if i + 1 < len(timeline) else end
        lo, hi = max(t, start), min(seg_end, end)
        if hi > lo:
            total += (hi - lo).total_seconds()
    return total


def entries_into(timeline: Timeline, status: str, start: datetime, end: datetime) -> list[datetime]:
    """When the device entered `status` within [start, end)."""
    out = []
    prev: str | None = None
    for t, s in timeline:
        if s == status and prev != status and start <= t < end:
            out.append(t)
        prev = s
    return out


@dataclass
class Context:
    """One report's inputs, with each table read at most once."""

    session: AsyncSession
    scope: Scope
    settings: ReportSettings
    now: datetime
    query: ReportQuery
    progress: Progress
    # Who asked: reports that check district-level facts (the security inspection) need to know.
    principal: Principal | None = None
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def until(self) -> datetime:
        """The end of what can be counted: the range's end, or now when the range reaches into the future."""
        return min(self.scope.end_at, self.now)

    @property
    def implausible_dates(self) -> int:
        """Devices whose stored purchase date is outside [1990-01-01, today + 1 year]; reports read it as
        unknown."""
        return int(self._cache.get("implausible", 0))

    def step(self, stage: str, done: int, total: int) -> None:
        self.progress(stage, done, total)

    async def rows(self, stmt: Any) -> Any:
        """Run a column query at the Core level: plain rows, without the ORM's per-row overhead."""
        return (await (await self.session.connection()).execute(stmt)).all()

    async def models(self) -> dict[int, ModelInfo]:
        if "models" not in self._cache:
            rows = await self.rows(
                select(
                    DeviceModel.id,
                    DeviceModel.vendor,
                    DeviceModel.model_number,
                    DeviceModel.kind,
                    DeviceModel.unit_price,
                    DeviceModel.warranty_months,
                    DeviceModel.supplier,
                )
            )
            self._cache["models"] = {r[0]: ModelInfo(*r) for r in rows}
        return self._cache["models"]  # type: ignore[no-any-return]  # filled above with this type

    async def rooms(self) -> dict[int, RoomInfo]:
        if "rooms" not in self._cache:
            stmt = _apply(
                select(Room.id, Room.school_id, Room.name, Room.kind, Room.tier, Room.capacity),
                self.scope.where(Room.school_id),
            )
            self._cache["rooms"] = {r[0]: RoomInfo(*r) for r in await self.rows(stmt)}
        return self._cache["rooms"]  # type: ignore[no-any-return]  # filled above with this type

    async def all_devices(self) -> list[Dev]:
        """Every device in scope, whatever its status or age."""
        if "devices" not in self._cache:
            stmt = _apply(
                select(
                    Device.id,
                    Device.asset_tag,
                    Device.serial_number,
                    Device.model_id,
                    Device.school_id,
                    Device.room_id,
                    Device.status,
                    Device.order_number,
                    Device.purchase_date,
                    Device.unit_cost,
                    Device.funding_source,
                    Device.ownership,
                    Device.created_at,
                ),
                self.scope.where(Device.school_id),
            ).order_by(Device.id)
            # A purchase date stored before validation existed (9999-12-31, 0001-01-01) is read as unknown and
            # counted, so one typo cannot break or skew the district's reports.
            first, last = timebounds.EARLIEST_PURCHASE, timebounds.latest_purchase(self.now.date())
            devices, bad = [], 0
            for r in await self.rows(stmt):
                dev = Dev(*r)
                if dev.purchase_date is not None and not first <= dev.purchase_date <= last:
                    dev = replace(dev, purchase_date=None)
                    bad += 1
                devices.append(dev)
            self._cache["devices"] = devices
            self._cache["implausible"] = bad
        return self._cache["devices"]  # type: ignore[no-any-return]  # filled above with this type

    async def timelines(self) -> dict[int, Timeline]:
        """Lifecycle history per device up to the end of the range, oldest first."""
        if "timelines" not in self._cache:
            stmt = select(DeviceTransition.device_id, DeviceTransition.at, DeviceTransition.to_status).where(
                DeviceTransition.at < self.scope.end_at
            )
            if not self.scope.all_schools:
                in_scope = self.scope.where(Device.school_id)
                assert in_scope is not None  # None only for all schools
                stmt = stmt.join(Device, Device.id == DeviceTransition.device_id).where(in_scope)
            out: dict[int, Timeline] = defaultdict(list)
            for dev_id, at, to in await self.rows(
                stmt.order_by(DeviceTransition.device_id, DeviceTransition.at, DeviceTransition.id)
            ):
                out[dev_id].append((at, to))
            self._cache["timelines"] = out
        return self._cache["timelines"]  # type: ignore[no-any-return]  # filled above with this type

    async def devices_at_end(self) -> list[tuple[Dev, str]]:
        """Devices that existed at the end of the range, with their status then."""
        if "at_end" not in self._cache:
            tls = await self.timelines()
            out = []
            end = self.scope.end_at
            for d in await self.all_devices():
                s = status_at(d, tls.get(d.id, []), end)
                if s is not None:
                    out.append((d, s))
            self._cache["at_end"] = out
        return self._cache["at_end"]  # type: ignore[no-any-return]  # filled above with this type

    async def active_minutes(self) -> dict[int, int]:
        """Active minutes per device within the range, from the hourly usage roll-ups."""
        stmt = _apply(
            select(UsageActive.device_id, func.sum(UsageActive.active_minutes)).where(
                UsageActive.bucket_start >= self.scope.start_at, UsageActive.bucket_start < self.scope.end_at
            ),
            self.scope.where(UsageActive.school_id),
        ).group_by(UsageActive.device_id)
        return {dev: int(total or 0) for dev, total in await self.rows(stmt)}

    async def unexpected_offline_seconds(self) -> dict[int, float]:
        """Seconds each device was offline when the timetable expected it online, within the range."""
        start, end = self.scope.start_at, self.until
        p, nxt = PresenceTransition, aliased(PresenceTransition)
        # Only unexpected offline transitions matter, each with the time of the device's next transition (the
        # (device_id, at) index answers that); one that began before the range counts from its start.
        next_at = (
            select(func.min(nxt.at)).where(nxt.device_id == p.device_id, nxt.at > p.at).scalar_subquery()
        )
        spells = _apply(
            select(p.device_id, p.at, next_at.label("next_at")).where(
                p.online.is_(False), p.expected.is_(False), p.at < end
            ),
            self.scope.where(p.school_id),
        ).subquery()
        stmt = select(spells.c.device_id, spells.c.at, spells.c.next_at).where(
            (spells.c.at >= start) | spells.c.next_at.is_(None) | (spells.c.next_at > start)
        )
        out: dict[int, float] = defaultdict(float)
        for dev, began, ended in await self.rows(stmt):
            lo = max(as_utc(began), start)
            hi = min(as_utc(ended), end) if ended is not None else end
            if hi > lo:
                out[dev] += (hi - lo).total_seconds()
        return out

    async def fault_alerts(self, *, open_only: bool) -> dict[int, list[tuple[str, datetime]]]:
        """Critical (fault) alerts per device: still open, or opened within the range."""
        stmt = _apply(
            select(Alert.device_id, Alert.rule, Alert.opened_at).where(Alert.severity == "critical"),
            self.scope.where(Alert.school_id),
        )
        if open_only:
            stmt = stmt.where(Alert.status != "resolved")
        else:
            stmt = stmt.where(Alert.opened_at >= self.scope.start_at, Alert.opened_at < self.scope.end_at)
        out: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
        for dev, rule, at in await self.rows(stmt.order_by(Alert.opened_at)):
            out[dev].append((rule, at))
        return out

    async def firmware_outcomes(self) -> dict[int, tuple[int, int]]:
        """Firmware updates that finished within the range, per device: (updates, failed or rolled back)."""
        stmt = _apply(
            select(RolloutDevice.device_id, RolloutDevice.state).where(
                RolloutDevice.state.in_(FW_FINISHED),
                RolloutDevice.finished_at >= self.scope.start_at,
                RolloutDevice.finished_at < self.scope.end_at,
            ),
            self.scope.where(RolloutDevice.school_id),
        )
        out: dict[int, tuple[int, int]] = {}
        for dev, state in await self.rows(stmt):
            attempts, failures = out.get(dev, (0, 0))
            out[dev] = (attempts + 1, failures + (state != "succeeded"))
        return out

    def report(
        self,
        name: str,
        title: str,
        summary: list[SummaryItem],
        sections: list[Section],
        notes: list[str] | None = None,
    ) -> Report:
        notes = list(notes or ())
        if self.implausible_dates:
            notes.append(
                _(
                    "{n} devices have a stored purchase date outside 1990-01-01 to a year ahead; it is read "
                    "as "
                    "unknown here. Correct it on the device.",
                    n=self.implausible_dates,
                )
            )
        return Report(
            name=name,
            title=title,
            generated_at=self.now,
            start=self.scope.start,
            end=self.scope.end,
            filters=dict(self.scope.filters),
            summary=tuple(summary),
            sections=tuple(sections),
            notes=tuple(notes),
            district=", ".join(self.scope.district_names),
        )
