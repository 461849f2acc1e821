"""Use cases the console needs that the API keeps in its routes today (fleet/api/routes/plane.py): device
search, commands, alerts and claim tokens, each with the same permission, scope and audit as that route.

When the architecture work moves these into their feature services, the console calls those instead and this
module goes away."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.permissions import Permission, Principal
from fleet.errors import InvalidInput, NotFound
from fleet.persistence.models import Device, DeviceModel, DeviceTransition, Room, School
from fleet.persistence.models_mqtt import Alert, ClaimToken, DeviceCommand, DeviceState, PresenceTransition
from fleet.persistence.models_rollouts import RolloutDeviceEvent
from fleet.services import alerts, audit, commands, enrollment
from fleet.services.common import check_school, decode_cursor, encode_cursor, require, scope_schools

# A console table shows 50 rows a page: readable at 1366x768, and one indexed range scan per page.
PAGE = 50


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


async def search_devices(
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
    paging
    on the id, so page 200 of 10,000 devices costs what page 1 does."""
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


async def choices(session: AsyncSession, principal: Principal) -> dict[str, list[Any]]:
    """Schools, rooms and models for the filter bar, within scope."""
    require(principal, Permission.READ_INVENTORY)
    schools = list(
        (
            await session.execute(scope_schools(select(School), principal, School.id).order_by(School.name))
        ).scalars()
    )
    rooms = list(
        (
            await session.execute(
                scope_schools(select(Room), principal, Room.school_id)
                .order_by(Room.school_id, Room.name)
                .limit(2000)
            )
        ).scalars()
    )
    models = list(
        (await session.execute(select(DeviceModel).order_by(DeviceModel.vendor).limit(500))).scalars()
    )
    return {"schools": schools, "rooms": rooms, "models": models}


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


# The device page shows the latest entries of each timeline; the API pages through the rest.
TIMELINE = 20


async def device_detail(session: AsyncSession, principal: Principal, device_id: int) -> DeviceDetail:
    require(principal, Permission.READ_INVENTORY)
    device = await session.get(Device, device_id)
    if device is None:
        raise NotFound(f"device {device_id} not found")
    check_school(principal, device.school_id, "device", device_id)
    model = await session.get(DeviceModel, device.model_id)
    school = await session.get(School, device.school_id)
    room = await session.get(Room, device.room_id) if device.room_id else None
    ops = principal.has(Permission.READ_OPERATIONS)

    async def latest(model_cls: Any, order: Any) -> list[Any]:
        if not ops:
            return []
        q = select(model_cls).where(model_cls.device_id == device_id).order_by(order.desc()).limit(TIMELINE)
        return list((await session.execute(q)).scalars())

    return DeviceDetail(
        device=device,
        model=model,  # type: ignore[arg-type]
        school=school,  # type: ignore[arg-type]
        room=room,
        state=await session.get(DeviceState, device_id) if ops else None,
        presence=await latest(PresenceTransition, PresenceTransition.id),
        alerts=await latest(Alert, Alert.id),
        commands=await latest(DeviceCommand, DeviceCommand.id),
        rollout_events=await latest(RolloutDeviceEvent, RolloutDeviceEvent.id),
        history=list(
            (
                await session.execute(
                    select(DeviceTransition)
                    .where(DeviceTransition.device_id == device_id)
                    .order_by(DeviceTransition.id.desc())
                    .limit(TIMELINE)
                )
            ).scalars()
        ),
    )


# ---------------------------------------------------------------- commands (as POST /api/v1/commands)

CONSOLE_COMMANDS = ("lock", "unlock", "reboot", "diagnostics", "set_policy")


async def send_command(
    session: AsyncSession,
    principal: Principal,
    *,
    device_id: int,
    name: str,
    args: dict[str, Any],
    now: datetime,
) -> str:
    """Queue a command for one device; returns the batch id. The caller commits, then wakes the dispatcher."""
    require(principal, Permission.SEND_COMMANDS)
    if name not in CONSOLE_COMMANDS:
        raise InvalidInput(f"unknown command {name}", details=[{"field": "name", "reason": "unknown"}])
    school_id = await commands.target_school(session, "device", device_id)
    check_school(principal, school_id, "device", device_id)
    batch = await commands.create(
        session,
        target_kind="device",
        target_id=device_id,
        name=name,
        args=args,
        ttl=commands.DEFAULT_TTL,
        timeout_s=commands.DEFAULT_TIMEOUT_S,
        actor=principal.actor,
        now=now,
    )
    audit.record(
        session,
        principal=principal,
        at=now,
        action="command.send",
        object_type="device",
        object_id=device_id,
        school_id=school_id,
        after={"batch_id": batch.batch_id, "name": name, "devices": len(batch.commands)},
    )
    return str(batch.batch_id)


async def command_progress(session: AsyncSession, principal: Principal, batch_id: str) -> dict[str, Any]:
    require(principal, Permission.READ_OPERATIONS)
    school_id = await commands.batch_school(session, batch_id[:64])
    check_school(principal, school_id, "command batch", batch_id)
    return await commands.progress(session, batch_id[:64])


# ---------------------------------------------------------------- alerts (as /api/v1/alerts)


async def list_alerts(
    session: AsyncSession,
    principal: Principal,
    *,
    school_id: int | None,
    room_id: int | None,
    status: str | None,
    severity: str | None,
    limit: int = 200,
) -> list[Alert]:
    rows = await alerts.list_alerts(
        session,
        principal,
        school_id=school_id,
        room_id=room_id,
        status=status,  # type: ignore[arg-type]  # the console's filter offers the same four values
        limit=limit,
    )
    return [a for a in rows if severity is None or a.severity == severity]


async def alert_action(
    session: AsyncSession, principal: Principal, alert_id: int, action: str, now: datetime
) -> Alert:
    fn = alerts.acknowledge if action == "ack" else alerts.resolve
    return await fn(session, principal, _At(now), alert_id)


class _At:
    """The clock of one console action: the time it was asked at."""

    def __init__(self, at: datetime) -> None:
        self._at = at

    def now(self) -> datetime:
        return self._at

    def monotonic(self) -> float:
        return 0.0


# ---------------------------------------------------------------- claim tokens (as /api/v1/.../claim-tokens)


async def list_claim_tokens(session: AsyncSession, principal: Principal, school_id: int) -> list[ClaimToken]:
    require(principal, Permission.MANAGE_ENROLLMENT)
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound(f"school {school_id} not found")
    check_school(principal, school_id, "school", school_id)
    q = select(ClaimToken).where(ClaimToken.school_id == school_id).order_by(ClaimToken.id.desc()).limit(200)
    return list((await session.execute(q)).scalars())


async def create_claim_token(
    session: AsyncSession,
    principal: Principal,
    *,
    school_id: int,
    max_uses: int,
    ttl: timedelta,
    allow_unknown: bool,
    label: str,
    now: datetime,
) -> tuple[ClaimToken, str]:
    require(principal, Permission.MANAGE_ENROLLMENT)
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound(f"school {school_id} not found")
    check_school(principal, school_id, "school", school_id)
    issued = await enrollment.create_claim_token(
        session,
        school_id=school_id,
        max_uses=max_uses,
        ttl=ttl,
        allow_unknown=allow_unknown,
        label=label,
        actor=principal.actor,
        now=now,
    )
    audit.record(
        session,
        principal=principal,
        at=now,
        action="claim_token.create",
        object_type="claim_token",
        object_id=issued.row.id,
        school_id=school_id,
        after={
            "max_uses": max_uses,
            "allow_unknown": allow_unknown,
            "expires_at": issued.row.expires_at.isoformat(),
        },
    )
    return issued.row, issued.token


async def revoke_claim_token(
    session: AsyncSession, principal: Principal, token_id: int, now: datetime
) -> ClaimToken:
    require(principal, Permission.MANAGE_ENROLLMENT)
    row = await session.get(ClaimToken, token_id)
    if row is None:
        raise NotFound(f"claim token {token_id} not found")
    check_school(principal, row.school_id, "claim token", token_id)
    row = await enrollment.revoke_claim_token(session, token_id, now=now)
    audit.record(
        session,
        principal=principal,
        at=now,
        action="claim_token.revoke",
        object_type="claim_token",
        object_id=token_id,
        school_id=row.school_id,
    )
    return row
