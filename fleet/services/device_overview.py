"""What the console's device list and device page show: a search over the inventory with presence and
health, and one device with its identity, state and latest timelines.

Each part is read through the service that owns it (scope and permission there): inventory for the device,
device_state for its state, presence for its presence timeline. The latest lifecycle changes, alerts,
commands and rollout events (newest first) have no such per-device use case, so they are read here, after
the inventory service checked the device's scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.clock import Clock
from fleet.domain.permissions import Permission, Principal
from fleet.persistence.models import Device, DeviceModel, DeviceTransition, Room, School
from fleet.persistence.models_mqtt import Alert, DeviceCommand, DeviceState, PresenceTransition
from fleet.persistence.models_rollouts import RolloutDeviceEvent
from fleet.services import device_state, presence
from fleet.services.common import decode_cursor, encode_cursor, require, scope_schools
from fleet.services.inventory import DeviceService

# A console table shows 50 rows a page: readable at 1366x768, and one indexed range scan per page.
PAGE = 50
# The device page shows the latest entries of each timeline; the API pages through the rest.
TIMELINE = 20


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device: Device
    model: DeviceModel
    school: School
    room: Room | None
    online: bool | None
    health: str | None


@dataclass(frozen=True, slots=True)
class DevicePage:
    rows: list[DeviceRow]
    next_cursor: str | None


async def search(
    session: AsyncSession,
    principal: Principal,
    *,
    text: str | None = None,
    school_id: int | None = None,
    room_id: int | None = None,
    model_id: int | None = None,
    status: str | None = None,
    online: bool | None = None,
    cursor: str | None = None,
    limit: int = PAGE,
) -> DevicePage:
    """Devices in scope by serial, asset tag or model (prefix), school, room, status and presence; keyset
    paging on the id, so page 200 of 10,000 devices costs what page 1 does."""
    require(principal, Permission.READ_INVENTORY)
    stmt: Any = (
        select(Device, DeviceModel, School, Room, DeviceState.online, DeviceState.health)
        .join(DeviceModel, DeviceModel.id == Device.model_id)
        .join(School, School.id == Device.school_id)
        .outerjoin(Room, Room.id == Device.room_id)
        .outerjoin(DeviceState, DeviceState.device_id == Device.id)
    )
    stmt = scope_schools(stmt, principal, Device.school_id)
    if text:
        t = text.strip()[:120]
        stmt = stmt.where(
            or_(
                Device.serial_number.startswith(t, autoescape=True),
                Device.asset_tag.startswith(t, autoescape=True),
                DeviceModel.model_number.startswith(t, autoescape=True),
            )
        )
    for col, val in ((Device.school_id, school_id), (Device.room_id, room_id), (Device.model_id, model_id)):
        if val is not None:
            stmt = stmt.where(col == val)
    if status:
        stmt = stmt.where(Device.status == status)
    if online is True:
        stmt = stmt.where(DeviceState.online.is_(True))
    elif online is False:
        stmt = stmt.where(or_(DeviceState.online.is_(False), DeviceState.online.is_(None)))
    after = decode_cursor(cursor)
    rows = (await session.execute(stmt.where(Device.id > after).order_by(Device.id).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    out = [DeviceRow(d, m, s, r, on, h) for d, m, s, r, on, h in rows]
    return DevicePage(rows=out, next_cursor=encode_cursor(out[-1].device.id) if more and out else None)


@dataclass(frozen=True, slots=True)
class DeviceDetail:
    device: Device
    model: DeviceModel
    school: School
    room: Room | None
    state: DeviceState | None
    presence: list[PresenceTransition]
    alerts: list[Alert]
    commands: list[DeviceCommand]
    rollout_events: list[RolloutDeviceEvent]
    history: list[DeviceTransition]


async def detail(session: AsyncSession, principal: Principal, clock: Clock, device_id: int) -> DeviceDetail:
    """One device for its page; operational parts only for principals that may read operations."""
    devices = DeviceService(session, principal, clock)
    device: Device = await devices.get(device_id)  # READ_INVENTORY and the device's school
    model = await session.get(DeviceModel, device.model_id)
    school = await session.get(School, device.school_id)
    assert model is not None and school is not None  # foreign keys
    room = await session.get(Room, device.room_id) if device.room_id else None
    ops = principal.has(Permission.READ_OPERATIONS)

    async def latest(model_cls: Any, *, operational: bool = True) -> list[Any]:
        if operational and not ops:
            return []
        q = (
            select(model_cls)
            .where(model_cls.device_id == device_id)
            .order_by(model_cls.id.desc())
            .limit(TIMELINE)
        )
        return list((await session.execute(q)).scalars())

    return DeviceDetail(
        device=device,
        model=model,
        school=school,
        room=room,
        state=await device_state.get(session, principal, device_id) if ops else None,
        presence=await presence.history(session, principal, device_id, limit=TIMELINE) if ops else [],
        alerts=await latest(Alert),
        commands=await latest(DeviceCommand),
        rollout_events=await latest(RolloutDeviceEvent),
        history=await latest(DeviceTransition, operational=False),  # newest first, as the page lists it
    )
