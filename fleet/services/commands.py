"""Device commands: create for a device, room or school; progress per batch; cancel what is not sent yet.

Services flush; the caller's unit of work commits. The runtime CommandDispatcher delivers queued commands.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain import wire
from fleet.domain.clock import Clock
from fleet.domain.permissions import Permission, Principal
from fleet.errors import Conflict, InvalidInput, NotFound
from fleet.persistence.db import after_commit
from fleet.persistence.models import Device, Room
from fleet.persistence.models_mqtt import DeviceCommand, DeviceCredential
from fleet.services import audit
from fleet.services.common import check_school, require
from fleet.services.ports import DevicePlanePort

# Time-to-live while the device is offline: a reboot order from this morning is moot by tomorrow.
DEFAULT_TTL = timedelta(hours=4)
MAX_TTL = timedelta(days=7)
# From sent to result: reboots take ~1 minute, diagnostics a few seconds.
DEFAULT_TIMEOUT_S = 120
MAX_TIMEOUT_S = 3600
# One school is at most ~1,000 terminals; a batch larger than this is a mistake, not a command.
MAX_BATCH_DEVICES = 5000
TARGET_KINDS = ("device", "room", "school")
FINAL = ("succeeded", "failed", "rejected", "timed_out", "expired", "cancelled")


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    commands: list[DeviceCommand]


def validate_args(name: str, args: dict[str, Any] | None) -> tuple[wire.CommandName, dict[str, Any]]:
    try:
        cmd = wire.CommandName(name)
    except ValueError:
        raise InvalidInput(f"unknown command {name!r}", details={"field": "name"}) from None
    if cmd == wire.CommandName.ROTATE_CREDENTIALS:
        # It carries a password made when it is sent: only a credential rotation queues it.
        raise InvalidInput(
            "rotate_credentials is queued by a credential rotation (POST /credentials/rotations)",
            details={"field": "name"},
        )
    args = dict(args or {})
    if cmd == wire.CommandName.SET_POLICY:
        try:
            return cmd, wire.policy_args(wire.parse_policy(args))
        except ValueError as err:
            raise InvalidInput(str(err), details={"field": "args"}) from None
    if cmd == wire.CommandName.LOCK:
        msg = args.get("message")
        if msg is not None and (not isinstance(msg, str) or len(msg) > wire.MAX_SHORT_TEXT):
            raise InvalidInput("message must be text of at most 128 characters", details={"field": "args"})
        return cmd, ({"message": msg} if msg else {})
    if args:
        raise InvalidInput(f"{cmd.value} takes no arguments", details={"field": "args"})
    return cmd, {}


async def target_devices(session: AsyncSession, kind: str, target_id: int) -> list[tuple[int, int]]:
    """(device id, school id) of enrolled, unrevoked devices in the target."""
    q = (
        select(Device.id, Device.school_id)
        .join(DeviceCredential, DeviceCredential.device_id == Device.id)
        .where(DeviceCredential.revoked_at.is_(None))
    )
    if kind == "device":
        q = q.where(Device.id == target_id)
    elif kind == "room":
        q = q.where(Device.room_id == target_id)
    elif kind == "school":
        q = q.where(Device.school_id == target_id)
    else:
        raise InvalidInput(f"target kind must be one of {TARGET_KINDS}", details={"field": "target"})
    return [(a, b) for a, b in (await session.execute(q.order_by(Device.id))).all()]


async def target_school(session: AsyncSession, kind: str, target_id: int) -> int:
    """The school a target belongs to (for scope checks); NotFound when it does not exist."""
    obj: Device | Room | None
    if kind == "device":
        obj = await session.get(Device, target_id)
    elif kind == "room":
        obj = await session.get(Room, target_id)
    elif kind == "school":
        from fleet.persistence.models import School

        school = await session.get(School, target_id)
        if school is None:
            raise NotFound("school not found")
        return school.id
    else:
        raise InvalidInput(f"target kind must be one of {TARGET_KINDS}", details={"field": "target"})
    if obj is None:
        raise NotFound(f"{kind} not found")
    return int(obj.school_id)


async def create(
    session: AsyncSession,
    *,
    target_kind: str,
    target_id: int,
    name: str,
    args: dict[str, Any] | None,
    ttl: timedelta | None,
    timeout_s: int | None,
    actor: str,
    now: datetime,
) -> Batch:
    cmd, clean = validate_args(name, args)
    ttl = ttl or DEFAULT_TTL
    if not timedelta(seconds=10) <= ttl <= MAX_TTL:
        raise InvalidInput("ttl must be between 10 s and 7 days", details={"field": "ttl_seconds"})
    timeout = timeout_s or DEFAULT_TIMEOUT_S
    if not 5 <= timeout <= MAX_TIMEOUT_S:
        raise InvalidInput("timeout must be between 5 s and 1 h", details={"field": "timeout_seconds"})
    await target_school(session, target_kind, target_id)
    devices = await target_devices(session, target_kind, target_id)
    if not devices:
        raise Conflict("no enrolled device in the target")
    if len(devices) > MAX_BATCH_DEVICES:
        raise InvalidInput(f"a batch is limited to {MAX_BATCH_DEVICES} devices", details={"field": "target"})
    batch_id = str(uuid.uuid4())
    rows = [
        DeviceCommand(
            correlation_id=str(uuid.uuid4()),
            batch_id=batch_id,
            target_kind=target_kind,
            target_id=target_id,
            device_id=dev,
            school_id=school,
            name=cmd.value,
            args=clean,
            status="queued",
            created_by=actor,
            created_at=now,
            expires_at=now + ttl,
            timeout_seconds=timeout,
        )
        for dev, school in devices
    ]
    session.add_all(rows)
    await session.flush()
    return Batch(batch_id, rows)


async def progress(session: AsyncSession, batch_id: str) -> dict[str, Any]:
    rows = (
        (
            await session.execute(
                select(DeviceCommand).where(DeviceCommand.batch_id == batch_id).order_by(DeviceCommand.id)
            )
        )
        .scalars()
        .all()
    )
    if not rows:
        raise NotFound("command batch not found")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return {
        "batch_id": batch_id,
        "name": rows[0].name,
        "target_kind": rows[0].target_kind,
        "target_id": rows[0].target_id,
        "school_id": rows[0].school_id,
        "total": len(rows),
        "done": sum(counts.get(s, 0) for s in FINAL),
        "by_status": counts,
        "commands": rows,
    }


async def batch_school(session: AsyncSession, batch_id: str) -> int:
    school = (
        await session.execute(
            select(func.min(DeviceCommand.school_id)).where(DeviceCommand.batch_id == batch_id)
        )
    ).scalar_one_or_none()
    if school is None:
        raise NotFound("command batch not found")
    return int(school)


async def cancel(session: AsyncSession, batch_id: str, *, now: datetime) -> int:
    rows = (
        (
            await session.execute(
                select(DeviceCommand).where(
                    DeviceCommand.batch_id == batch_id, DeviceCommand.status == "queued"
                )
            )
        )
        .scalars()
        .all()
    )
    for r in rows:
        r.status = "cancelled"
        r.finished_at = now
    await session.flush()
    return len(rows)


# ---------------------------------------------------------------- use cases (permission, scope, audit)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    target_kind: str  # device | room | school
    target_id: int
    name: str
    args: dict[str, Any]
    ttl: timedelta
    timeout_s: int


async def send(
    session: AsyncSession,
    principal: Principal,
    clock: Clock,
    spec: CommandSpec,
    plane: DevicePlanePort | None = None,
) -> dict[str, Any]:
    """Queue a command for a device, a room or a school; offline devices get it when they reconnect.

    Returns the batch's progress; once committed, the dispatcher is woken to send it now."""
    require(principal, Permission.SEND_COMMANDS)
    school_id = await target_school(session, spec.target_kind, spec.target_id)
    check_school(principal, school_id, spec.target_kind, spec.target_id)
    now = clock.now()
    batch = await create(
        session,
        target_kind=spec.target_kind,
        target_id=spec.target_id,
        name=spec.name,
        args=spec.args,
        ttl=spec.ttl,
        timeout_s=spec.timeout_s,
        actor=principal.actor,
        now=now,
    )
    audit.record(
        session,
        principal=principal,
        at=now,
        action="command.send",
        object_type=spec.target_kind,
        object_id=spec.target_id,
        school_id=school_id,
        after={"batch_id": batch.batch_id, "name": spec.name, "devices": len(batch.commands)},
    )
    if plane is not None:

        async def wake() -> None:
            plane.wake_dispatcher()

        after_commit(session, wake)
    return await progress(session, batch.batch_id)


async def batch_progress(session: AsyncSession, principal: Principal, batch_id: str) -> dict[str, Any]:
    require(principal, Permission.READ_OPERATIONS)
    school_id = await batch_school(session, batch_id)
    check_school(principal, school_id, "command batch", batch_id)
    return await progress(session, batch_id)


async def cancel_batch(
    session: AsyncSession, principal: Principal, clock: Clock, batch_id: str
) -> dict[str, Any]:
    """Cancel the commands of a batch that were not sent yet; returns the batch's progress."""
    require(principal, Permission.SEND_COMMANDS)
    school_id = await batch_school(session, batch_id)
    check_school(principal, school_id, "command batch", batch_id)
    now = clock.now()
    n = await cancel(session, batch_id, now=now)
    audit.record(
        session,
        principal=principal,
        at=now,
        action="command.cancel",
        object_type="command_batch",
        object_id=batch_id,
        school_id=school_id,
        after={"cancelled": n},
    )
    return await progress(session, batch_id)
