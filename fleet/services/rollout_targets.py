"""Rollout target selection: which devices a rollout updates, in which group, and where their commands go."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.enums import DeviceStatus
from fleet.domain.rollouts import DeviceUpdateState, GroupPlan, GroupStrategy, PlannedGroup, plan_groups
from fleet.persistence.models import Device, DeviceModel, School
from fleet.persistence.models_mqtt import DeviceCredential, DeviceState
from fleet.persistence.models_rollouts import Rollout, RolloutDevice, RolloutDeviceEvent, RolloutGroup

# Devices a rollout may touch: provisioned or in service (not in repair, retired or lost).
UPDATABLE_STATUSES = (DeviceStatus.PROVISIONED.value, DeviceStatus.IN_SERVICE.value)


@dataclass(frozen=True, slots=True)
class DeviceTarget:
    """Where a command for one device goes."""

    device_id: int
    identity: str  # MQTT client id (or serial number)
    school_code: str
    transport: str
    # Presence as last reported; a serial kit is reachable only while an edge agent bridges it (online).
    online: bool | None = None


def plan_of(r: Rollout) -> GroupPlan:
    p = r.group_plan or {}
    return GroupPlan(
        canary_size=int(p.get("canary_size", 1)),
        canary_percent=p.get("canary_percent"),
        strategy=GroupStrategy(p.get("strategy", GroupStrategy.PER_SCHOOL.value)),
        percents=tuple(p.get("percents", (25.0, 50.0, 100.0))),
    )


async def matching_devices(
    session: AsyncSession, r: Rollout, exclude: set[int] | None = None
) -> list[tuple[Device, str | None]]:
    """Devices the rollout's targets select now, with their reported firmware version."""
    stmt = (
        select(Device, DeviceState.firmware_version)
        .outerjoin(DeviceState, DeviceState.device_id == Device.id)
        .where(Device.model_id == r.model_id, Device.status.in_(UPDATABLE_STATUSES))
    )
    if r.school_ids:
        stmt = stmt.where(Device.school_id.in_(r.school_ids))
    if r.room_ids:
        stmt = stmt.where(Device.room_id.in_(r.room_ids))
    out = []
    for dev, version in (await session.execute(stmt.order_by(Device.id))).all():
        if exclude and dev.id in exclude:
            continue
        if version == r.target_version:
            continue  # already there
        if r.from_versions and version not in r.from_versions:
            continue
        out.append((dev, version))
    return out


async def planned_groups(
    session: AsyncSession, r: Rollout
) -> tuple[list[tuple[str, PlannedGroup]], dict[int, tuple[Device, str | None]]]:
    """The groups a rollout starts with, each with the name people see, and the matching devices by id.

    A rollout's start and its preview both use this, so the preview shows what the start then does."""
    matching = await matching_devices(session, r)
    groups = plan_groups([(d.id, d.school_id) for d, _ in matching], plan_of(r)) or []
    if not groups:
        groups = [PlannedGroup("canary", "canary", ())]
    codes = await school_codes(session, [g.school_id for g in groups if g.school_id is not None])
    named = [
        (f"school {codes.get(g.school_id, g.school_id)}" if g.school_id is not None else g.name, g)
        for g in groups
    ]
    return named, {d.id: (d, v) for d, v in matching}


def add_device(
    session: AsyncSession, r: Rollout, g: RolloutGroup, dev: Device, version: str | None, now: datetime
) -> RolloutDevice:
    rd = RolloutDevice(
        rollout_id=r.id,
        group_id=g.id,
        device_id=dev.id,
        school_id=dev.school_id,
        room_id=dev.room_id,
        state=DeviceUpdateState.PENDING.value,
        from_version=version,
        to_version=r.target_version,
        attempts=0,
        bytes_done=0,
        created_at=now,
        updated_at=now,
    )
    session.add(rd)
    session.add(
        RolloutDeviceEvent(
            rollout_id=r.id, device_id=dev.id, at=now, event="pending", detail=f"group {g.name}"
        )
    )
    return rd


async def school_codes(session: AsyncSession, school_ids: Sequence[int]) -> dict[int, str]:
    """School codes by id: groups are named for people ("school north-primary", not "school 3")."""
    if not school_ids:
        return {}
    rows = (
        await session.execute(select(School.id, School.code).where(School.id.in_(sorted(set(school_ids)))))
    ).all()
    return {i: code for i, code in rows}


async def device_targets(session: AsyncSession, device_ids: Sequence[int]) -> dict[int, DeviceTarget]:
    if not device_ids:
        return {}
    rows = (
        await session.execute(
            select(
                Device.id,
                Device.serial_number,
                School.code,
                DeviceModel.transport,
                DeviceCredential.username,
                DeviceState.online,
            )
            .join(School, School.id == Device.school_id)
            .join(DeviceModel, DeviceModel.id == Device.model_id)
            .outerjoin(DeviceCredential, DeviceCredential.device_id == Device.id)
            .outerjoin(DeviceState, DeviceState.device_id == Device.id)
            .where(Device.id.in_(list(device_ids)))
        )
    ).all()
    return {
        i: DeviceTarget(i, user or serial, code, transport, online)
        for i, serial, code, transport, user, online in rows
    }
