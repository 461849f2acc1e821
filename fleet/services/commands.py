"""Device commands: create for a device, room or school; progress per batch; acknowledge alerts.

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
from fleet.errors import Conflict, InvalidInput, NotFound
from fleet.persistence.models import Device, Room
from fleet.persistence.models_mqtt import Alert, DeviceCommand, DeviceCredential

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


# ---------------------------------------------------------------- alerts


async def list_alerts(
    session: AsyncSession,
    *,
    school_ids: list[int] | None,
    school_id: int | None,
    room_id: int | None,
    status: str | None,
    limit: int,
    offset: int,
) -> list[Alert]:
    q = select(Alert).order_by(Alert.opened_at.desc(), Alert.id.desc())
    if school_ids is not None:
        q = q.where(Alert.school_id.in_(school_ids))
    if school_id is not None:
        q = q.where(Alert.school_id == school_id)
    if room_id is not None:
        q = q.where(Alert.room_id == room_id)
    if status == "active":
        q = q.where(Alert.status != "resolved")
    elif status is not None:
        q = q.where(Alert.status == status)
    return list((await session.execute(q.limit(limit).offset(offset))).scalars().all())


async def acknowledge_alert(session: AsyncSession, alert_id: int, *, actor: str, now: datetime) -> Alert:
    alert = await session.get(Alert, alert_id)
    if alert is None:
        raise NotFound("alert not found")
    if alert.status == "resolved":
        raise Conflict("alert is already resolved")
    if alert.status == "open":
        alert.status = "acknowledged"
        alert.acknowledged_at = now
        alert.acknowledged_by = actor
    await session.flush()
    return alert


async def resolve_alert(session: AsyncSession, alert_id: int, *, actor: str, now: datetime) -> Alert:
    alert = await session.get(Alert, alert_id)
    if alert is None:
        raise NotFound("alert not found")
    if alert.status != "resolved":
        alert.status = "resolved"
        alert.dedup_key = None
        alert.resolved_at = now
        alert.resolved_by = actor
    await session.flush()
    return alert
