"""Room stocktake: start a count of a room (devices heard from over MQTT pre-marked), scan labels or typed
tags, settle the differences through the device lifecycle, finish into the audit log.

The API (`/api/v1/stocktakes`) and the console (`/stocktake`) call these functions; they own permission
(reading needs READ_INVENTORY, counting MANAGE_DEVICES), scope (another school's room or count answers
NotFound) and audit (`stocktake.start`, `stocktake.finish`; moves and losses are the device's own entries).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.clock import Clock
from fleet.domain.enums import DeviceStatus
from fleet.domain.permissions import Permission, Principal
from fleet.domain.stocktake import (
    COUNTED,
    LineStatus,
    Resolution,
    Tally,
    WindowChoice,
    parse_code,
    tally,
)
from fleet.domain.stocktake import window as network_window
from fleet.errors import Conflict, InvalidInput, NotFound
from fleet.persistence.models import Device, DeviceModel, Room, School
from fleet.persistence.models_mqtt import ACTIVE_BUCKET_SECONDS, DeviceState, UsageActive
from fleet.persistence.models_stocktake import Stocktake, StocktakeLine
from fleet.services import audit
from fleet.services.common import require, scope_schools
from fleet.services.inventory import DeviceService

log = logging.getLogger(__name__)

# A reason is a sentence for the lifecycle history, not an essay (DeviceTransition.reason holds 500).
MAX_REASON = 500
# Counts listed on the room picker: the open ones first, then the latest finished.
RECENT = 20


@dataclass(frozen=True, slots=True)
class LineView:
    device_id: int
    asset_tag: str
    serial_number: str
    model: str
    status: str
    seen_by_network: bool
    scanned_at: datetime | None
    resolution: str | None
    home_room: str | None  # the room the device belongs to, when not this one
    home_school: str | None  # its school's code, when not this one
    device_status: str


@dataclass(frozen=True, slots=True)
class CountView:
    stocktake: Stocktake
    room: Room
    school: School
    lines: list[LineView]
    tally: Tally

    @property
    def finished(self) -> bool:
        return self.stocktake.finished_at is not None

    def with_status(self, status: str) -> list[LineView]:
        return [line for line in self.lines if line.status == status]


@dataclass(frozen=True, slots=True)
class ScanResult:
    outcome: str  # found, already (scanned before), unexpected
    device_id: int
    asset_tag: str


async def _room(session: AsyncSession, principal: Principal, room_id: int) -> tuple[Room, School]:
    room = await session.get(Room, room_id)
    if room is None or not principal.sees_school(room.school_id):
        raise NotFound(f"room {room_id} not found")
    school = await session.get(School, room.school_id)
    assert school is not None
    return room, school


async def _count(session: AsyncSession, principal: Principal, stocktake_id: int) -> Stocktake:
    st = await session.get(Stocktake, stocktake_id)
    if st is None or not principal.sees_school(st.school_id):
        raise NotFound(f"stocktake {stocktake_id} not found")
    return st


async def _open_count(session: AsyncSession, principal: Principal, stocktake_id: int) -> Stocktake:
    require(principal, Permission.MANAGE_DEVICES)
    st = await _count(session, principal, stocktake_id)
    if st.finished_at is not None:
        raise Conflict(f"stocktake {stocktake_id} is finished; start a new count to change it")
    return st


async def seen_by_network(
    session: AsyncSession, room_id: int, device_ids: list[int], start: datetime, end: datetime
) -> set[int]:
    """The devices among `device_ids` that reported over MQTT from this room in [start, end] (end is now: a
    message stamped this instant counts): an active minute booked to the room (hourly buckets, so the first
    bucket may start before `start`), or a sign of life of a device that belongs to the room now."""
    if not device_ids:
        return set()
    first_bucket = datetime.fromtimestamp(
        start.timestamp() - start.timestamp() % ACTIVE_BUCKET_SECONDS, tz=start.tzinfo
    )
    active = select(UsageActive.device_id).where(
        UsageActive.room_id == room_id,
        UsageActive.bucket_start >= first_bucket,
        UsageActive.bucket_start <= end,
        UsageActive.device_id.in_(device_ids),
    )
    alive = select(DeviceState.device_id).where(
        DeviceState.device_id.in_(device_ids),
        DeviceState.last_seen_at >= start,
        DeviceState.last_seen_at <= end,
    )
    found = {r[0] for r in await session.execute(active)}
    found.update(r[0] for r in await session.execute(alive))
    return found


async def start(
    session: AsyncSession,
    principal: Principal,
    clock: Clock,
    room_id: int,
    choice: WindowChoice = WindowChoice.TODAY,
) -> Stocktake:
    """Open a count of a room: a line per device the room should hold, pre-marked found when the network
    heard from it in the chosen window (days begin at midnight in the school's time zone)."""
    require(principal, Permission.MANAGE_DEVICES)
    room, school = await _room(session, principal, room_id)
    now = clock.now()
    window = network_window(choice, now, school.timezone)
    st = Stocktake(
        school_id=room.school_id,
        room_id=room.id,
        started_by=principal.actor,
        started_at=now,
        window_start=window[0] if window else None,
        window_end=window[1] if window else None,
        found=0,
        missing=0,
        unexpected=0,
        moved=0,
        lost=0,
    )
    session.add(st)
    await session.flush()
    expected = [
        r[0]
        for r in await session.execute(
            select(Device.id).where(Device.room_id == room.id, Device.status.in_(sorted(COUNTED)))
        )
    ]
    heard = await seen_by_network(session, room.id, expected, *window) if window else set()
    for device_id in expected:
        seen = device_id in heard
        session.add(
            StocktakeLine(
                stocktake_id=st.id,
                device_id=device_id,
                status=LineStatus.FOUND if seen else LineStatus.MISSING,
                seen_by_network=seen,
            )
        )
    await session.flush()
    audit.record(
        session,
        principal=principal,
        at=now,
        action="stocktake.start",
        object_type="stocktake",
        object_id=st.id,
        school_id=st.school_id,
        after={
            "room_id": room.id,
            "expected": len(expected),
            "seen_by_network": len(heard),
            "window_start": st.window_start.isoformat() if st.window_start else None,
            "window_end": st.window_end.isoformat() if st.window_end else None,
        },
    )
    log.info(
        "stocktake %d started: room %d, %d expected, %d heard", st.id, room.id, len(expected), len(heard)
    )
    return st


async def _find_device(session: AsyncSession, principal: Principal, code: str) -> Device:
    parsed = parse_code(code)
    unknown = InvalidInput(
        "no device with this label, asset tag or serial number in your schools",
        details=[{"field": "code", "reason": "unknown"}],
    )
    if parsed is None:
        raise unknown
    if parsed.device_id is not None:
        cond = Device.id == parsed.device_id
    else:
        cond = or_(Device.asset_tag == parsed.text, Device.serial_number == parsed.text)
    rows = (
        (
            await session.execute(
                scope_schools(select(Device).where(cond), principal, Device.school_id).limit(2)
            )
        )
        .scalars()
        .all()
    )
    if not rows:
        raise unknown
    if len(rows) > 1:
        # Two vendors may share a serial number; the asset tag is unique.
        tagged = [d for d in rows if d.asset_tag == parsed.text]
        if len(tagged) != 1:
            raise InvalidInput(
                "this serial number belongs to more than one device; scan the label or type the asset tag",
                details=[{"field": "code", "reason": "ambiguous"}],
            )
        rows = tagged
    return rows[0]


async def scan(
    session: AsyncSession, principal: Principal, clock: Clock, stocktake_id: int, code: str
) -> ScanResult:
    """A label scanned (or a tag typed) in the room: found if it belongs here, unexpected otherwise."""
    st = await _open_count(session, principal, stocktake_id)
    device = await _find_device(session, principal, code)
    now = clock.now()
    line = (
        await session.execute(
            select(StocktakeLine).where(
                StocktakeLine.stocktake_id == st.id, StocktakeLine.device_id == device.id
            )
        )
    ).scalar_one_or_none()
    if line is None:
        line = StocktakeLine(
            stocktake_id=st.id,
            device_id=device.id,
            status=LineStatus.UNEXPECTED,
            seen_by_network=False,
            scanned_at=now,
        )
        session.add(line)
        outcome = "unexpected"
        try:
            await session.flush()
        except IntegrityError as err:
            # Two phones scanned the same device into this count at the same moment: the other one won.
            raise Conflict(f"{device.asset_tag} was counted by another scan just now") from err
    elif line.scanned_at is not None:
        outcome = "already" if line.status != LineStatus.UNEXPECTED else "unexpected"
    else:
        line.scanned_at = now
        if line.status == LineStatus.MISSING and line.resolution is None:
            line.status = LineStatus.FOUND
        outcome = "found" if line.status == LineStatus.FOUND else str(line.status)
    await session.flush()
    return ScanResult(outcome, device.id, device.asset_tag)


async def resolve(
    session: AsyncSession,
    principal: Principal,
    clock: Clock,
    stocktake_id: int,
    device_id: int,
    action: Resolution,
    reason: str,
) -> StocktakeLine:
    """Settle a difference through the lifecycle: move an unexpected device here, or mark a missing one
    lost; both with the technician's reason."""
    st = await _open_count(session, principal, stocktake_id)
    reason = reason.strip()[:MAX_REASON]
    if not reason:
        raise InvalidInput("a reason is needed", details=[{"field": "reason", "reason": "required"}])
    line = (
        await session.execute(
            select(StocktakeLine).where(
                StocktakeLine.stocktake_id == st.id, StocktakeLine.device_id == device_id
            )
        )
    ).scalar_one_or_none()
    if line is None:
        raise NotFound(f"device {device_id} is not in stocktake {stocktake_id}")
    if line.resolution is not None:
        raise Conflict(f"device {device_id} was already settled in this count ({line.resolution})")
    devices = DeviceService(session, principal, clock)
    if action is Resolution.MOVED_HERE:
        if line.status != LineStatus.UNEXPECTED:
            raise Conflict("only a device that belongs elsewhere can be moved here")
        await devices.move(device_id, st.room_id, reason)
    else:
        if line.status != LineStatus.MISSING:
            raise Conflict("only a missing device can be marked lost")
        await devices.transition(device_id, DeviceStatus.LOST, reason)
    line.resolution = action
    line.resolved_at = clock.now()
    await session.flush()
    return line


async def finish(session: AsyncSession, principal: Principal, clock: Clock, stocktake_id: int) -> Stocktake:
    """Close the count and record who, when, found, missing and moved in the audit log."""
    st = await _open_count(session, principal, stocktake_id)
    now = clock.now()
    rows = await session.execute(
        select(
            StocktakeLine.status,
            StocktakeLine.seen_by_network,
            StocktakeLine.scanned_at.is_not(None),
            StocktakeLine.resolution,
        ).where(StocktakeLine.stocktake_id == st.id)
    )
    t = tally((str(s), bool(seen), bool(scanned), res) for s, seen, scanned, res in rows)
    st.finished_at = now
    st.finished_by = principal.actor
    st.found, st.missing, st.unexpected, st.moved, st.lost = t.found, t.missing, t.unexpected, t.moved, t.lost
    await session.flush()
    audit.record(
        session,
        principal=principal,
        at=now,
        action="stocktake.finish",
        object_type="stocktake",
        object_id=st.id,
        school_id=st.school_id,
        after={"room_id": st.room_id, "started_by": st.started_by, **t.as_dict()},
        summary=(
            f"found {t.found}, missing {t.missing}, unexpected {t.unexpected}, moved {t.moved}, "
            f"marked lost {t.lost}"
        ),
    )
    return st


async def view(session: AsyncSession, principal: Principal, stocktake_id: int) -> CountView:
    """A count with its lines (tag, serial, model, where each unexpected device belongs) and its tally."""
    require(principal, Permission.READ_INVENTORY)
    st = await _count(session, principal, stocktake_id)
    room, school = await _room(session, principal, st.room_id)
    home = Room.__table__.alias("home")
    home_school = School.__table__.alias("home_school")
    rows = await session.execute(
        select(
            StocktakeLine,
            Device.asset_tag,
            Device.serial_number,
            Device.status,
            DeviceModel.vendor,
            DeviceModel.model_number,
            home.c.id,
            home.c.name,
            home_school.c.code,
        )
        .join(Device, Device.id == StocktakeLine.device_id)
        .join(DeviceModel, DeviceModel.id == Device.model_id)
        .outerjoin(home, home.c.id == Device.room_id)
        .join(home_school, home_school.c.id == Device.school_id)
        .where(StocktakeLine.stocktake_id == st.id)
        .order_by(Device.asset_tag)
    )
    lines = []
    for line, tag, serial, dstatus, vendor, number, home_id, home_name, home_code in rows:
        elsewhere = home_id != room.id
        lines.append(
            LineView(
                device_id=line.device_id,
                asset_tag=tag,
                serial_number=serial,
                model=f"{vendor} {number}",
                status=line.status,
                seen_by_network=line.seen_by_network,
                scanned_at=line.scanned_at,
                resolution=line.resolution,
                home_room=home_name if elsewhere else None,
                home_school=home_code if home_code != school.code else None,
                device_status=dstatus,
            )
        )
    t = tally((v.status, v.seen_by_network, v.scanned_at is not None, v.resolution) for v in lines)
    return CountView(st, room, school, lines, t)


async def recent(
    session: AsyncSession, principal: Principal, *, room_id: int | None = None, limit: int = RECENT
) -> list[tuple[Stocktake, Room]]:
    """The caller's latest counts, open ones first."""
    require(principal, Permission.READ_INVENTORY)
    stmt = scope_schools(
        select(Stocktake, Room).join(Room, Room.id == Stocktake.room_id), principal, Stocktake.school_id
    )
    if room_id is not None:
        stmt = stmt.where(Stocktake.room_id == room_id)
    stmt = stmt.order_by(Stocktake.finished_at.is_not(None), Stocktake.started_at.desc(), Stocktake.id.desc())
    return [(st, room) for st, room in (await session.execute(stmt.limit(limit))).all()]


__all__ = [
    "CountView",
    "LineView",
    "ScanResult",
    "finish",
    "recent",
    "resolve",
    "scan",
    "seen_by_network",
    "start",
    "view",
]
