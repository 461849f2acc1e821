"""Credential rotation over MQTT (docs/protocol-mqtt.md section 8.1): the new password reaches the device on
its own cmd topic, and the old one stops when the device acknowledges or when the grace period ends.

Three steps, each its own transaction:

1. `start` (API, CLI): queue one `rotate_credentials` command per device in scope and remember the grace
   period; nothing changes for the broker yet. Scoped and audited.
2. `issue` (the command dispatcher, when it sends the command to a device that is online): make the new
   password, keep only its hash as `pending_hash` with `pending_until` = now + grace, and hand the password to
   the dispatcher for the payload. From the commit on, the broker accepts both passwords.
3. `settle` (the device plane, every few seconds): a rotation whose command was acknowledged, or whose grace
   period is over, makes the new hash the only one (the old password stops; the caller ends the session); one
   the device refused, or that could never be delivered, is dropped (the old password stays).

The password itself is in no table, no log, no metric and no audit record: it exists in memory between
`issue` and the publish, and in the broker's queue for the device.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain import credentials, wire
from fleet.domain.clock import Clock, as_utc
from fleet.domain.enums import Role
from fleet.domain.permissions import Permission, Principal
from fleet.errors import InvalidInput, PermissionDenied
from fleet.persistence.db import after_commit
from fleet.persistence.models import Device
from fleet.persistence.models_mqtt import DeviceCommand, DeviceCredential
from fleet.services import audit
from fleet.services.common import require, school_in_scope
from fleet.services.ports import DevicePlanePort

DEFAULT_GRACE = timedelta(hours=24)
# A grace period shorter than a minute leaves a terminal no time to store the password and ack; one longer
# than 30 days keeps a password the operator wanted gone.
MIN_GRACE = timedelta(minutes=1)
MAX_GRACE = timedelta(days=30)
# How long the command waits for an offline device; undelivered after this, the rotation lapses (the old
# password never stopped) and can be started again.
COMMAND_TTL = timedelta(days=7)
# From sent to result: the terminal reports its result after it reconnected with the new password.
COMMAND_TIMEOUT_S = 600
# The system principal the audit log names for what the plane settles.
SETTLE_ACTOR = Principal(
    name="credential-rotation", role=Role.ADMIN, district_wide=True, school_ids=frozenset()
)


@dataclass(frozen=True, slots=True)
class Started:
    batch_id: str
    devices: int  # rotations queued
    skipped: int  # devices with a rotation already under way


@dataclass(frozen=True, slots=True)
class Settled:
    retired: list[str]  # identities whose old password stopped: end their live session
    dropped: list[str]  # identities whose pending password was withdrawn: reload only


def check_grace(grace: timedelta | None) -> timedelta:
    grace = DEFAULT_GRACE if grace is None else grace
    if not MIN_GRACE <= grace <= MAX_GRACE:
        raise InvalidInput(
            "grace period must be between 1 minute and 30 days", details={"field": "grace_hours"}
        )
    return grace


async def start(
    session: AsyncSession,
    principal: Principal,
    clock: Clock,
    *,
    school_id: int | None,
    grace: timedelta | None = None,
    plane: DevicePlanePort | None = None,
) -> Started:
    """Queue a rotation for every enrolled, unrevoked device of one school, or of the district."""
    require(principal, Permission.MANAGE_ENROLLMENT)
    grace = check_grace(grace)
    if school_id is None:
        if not principal.district_wide:
            raise PermissionDenied("a district-wide rotation needs a district-wide role; give a school_id")
    else:
        await school_in_scope(session, principal, school_id)
    now = clock.now()
    q = (
        select(DeviceCredential, Device.school_id)
        .join(Device, Device.id == DeviceCredential.device_id)
        .where(DeviceCredential.revoked_at.is_(None))
        .order_by(DeviceCredential.id)
    )
    if school_id is not None:
        q = q.where(Device.school_id == school_id)
    rows = (await session.execute(q)).all()
    batch_id = str(uuid.uuid4())
    started = skipped = 0
    for cred, device_school in rows:
        if cred.rotation_command_id is not None:
            skipped += 1
            continue
        cmd = DeviceCommand(
            correlation_id=str(uuid.uuid4()),
            batch_id=batch_id,
            target_kind="school" if school_id is not None else "device",
            target_id=school_id if school_id is not None else cred.device_id,
            device_id=cred.device_id,
            school_id=device_school,
            name=wire.CommandName.ROTATE_CREDENTIALS.value,
            args={},  # the password is made when the command is sent, and never stored
            status="queued",
            created_by=principal.name,
            created_at=now,
            expires_at=now + COMMAND_TTL,
            timeout_seconds=COMMAND_TIMEOUT_S,
        )
        session.add(cmd)
        await session.flush()
        cred.rotation_command_id = cmd.id
        cred.rotation_grace_s = int(grace.total_seconds())
        started += 1
    audit.record(
        session,
        principal=principal,
        at=now,
        action="credentials.rotation_start",
        object_type="school" if school_id is not None else "district",
        object_id=school_id if school_id is not None else 0,
        school_id=school_id,
        after={"devices": started, "skipped": skipped, "grace_s": int(grace.total_seconds())},
        summary=f"batch {batch_id}",
    )
    await session.flush()
    if plane is not None and started:

        async def wake() -> None:
            plane.wake_dispatcher()

        after_commit(session, wake)
    return Started(batch_id, started, skipped)


async def issue(session: AsyncSession, command: DeviceCommand, now: datetime) -> dict[str, Any] | None:
    """The dispatcher is about to send `command`: the wire arguments with a fresh password, or None when the
    rotation is no longer wanted (the command is then withdrawn). Only the hash is kept; the caller commits
    before it publishes, so the broker accepts the new password before the device can use it."""
    cred = (
        await session.execute(select(DeviceCredential).where(DeviceCredential.device_id == command.device_id))
    ).scalar_one_or_none()
    if cred is None or cred.revoked_at is not None or cred.rotation_command_id != command.id:
        return None
    password = credentials.new_password()
    grace = timedelta(seconds=cred.rotation_grace_s or int(DEFAULT_GRACE.total_seconds()))
    cred.pending_hash = credentials.hash_password(password)
    cred.pending_until = now + grace
    return wire.rotation_args(password, int(cred.pending_until.timestamp() * 1000))


async def settle(session: AsyncSession, clock: Clock) -> Settled:
    """Finish the rotations that are due (see the module doc); the caller commits, then tells the broker."""
    now = clock.now()
    rows = (
        await session.execute(
            select(DeviceCredential, DeviceCommand, Device.school_id)
            .join(DeviceCommand, DeviceCommand.id == DeviceCredential.rotation_command_id)
            .join(Device, Device.id == DeviceCredential.device_id)
            .where(DeviceCredential.rotation_command_id.is_not(None))
        )
    ).all()
    retired: list[str] = []
    dropped: list[str] = []
    for cred, cmd, school_id in rows:
        outcome = _outcome(cred, cmd, now)
        if outcome is None:
            continue
        done = outcome in ("acked", "grace_ended")
        if done:
            assert cred.pending_hash is not None
            cred.password_hash = cred.pending_hash
            cred.rotated_at = now
            retired.append(cred.username)
        elif cred.pending_hash is not None:
            dropped.append(cred.username)
        cred.pending_hash = None
        cred.pending_until = None
        cred.rotation_command_id = None
        cred.rotation_grace_s = None
        audit.record(
            session,
            principal=SETTLE_ACTOR,
            at=now,
            action="credentials.rotated" if done else "credentials.rotation_lapsed",
            object_type="device",
            object_id=cred.device_id,
            school_id=school_id,
            after={"outcome": outcome},
        )
    await session.flush()
    return Settled(retired, dropped)


def _outcome(cred: DeviceCredential, cmd: DeviceCommand, now: datetime) -> str | None:
    """acked | grace_ended | refused | undelivered | revoked, or None while the rotation is still open."""
    if cred.revoked_at is not None:
        return "revoked"
    if cred.pending_hash is None:
        # Not sent yet: open while the command waits; lapsed when it can no longer be sent.
        return "undelivered" if cmd.status in ("expired", "cancelled", "timed_out", "failed") else None
    if cmd.status == "rejected":
        return "refused"
    if cmd.acked_at is not None:
        return "acked"
    if cred.pending_until is not None and as_utc(cred.pending_until) <= now:
        return "grace_ended"
    return None
