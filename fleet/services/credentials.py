"""A device's broker credentials: rotate (a new password, shown once) and revoke (the broker drops it)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.clock import Clock
from fleet.domain.permissions import Permission, Principal
from fleet.persistence.db import after_commit
from fleet.persistence.models_mqtt import DeviceCredential
from fleet.services import audit, enrollment
from fleet.services.common import device_in_scope, require
from fleet.services.ports import DevicePlanePort


@dataclass(frozen=True, slots=True)
class Rotated:
    credential: DeviceCredential
    password: str  # shown once


async def rotate(
    session: AsyncSession,
    principal: Principal,
    clock: Clock,
    device_id: int,
    plane: DevicePlanePort | None = None,
) -> Rotated:
    require(principal, Permission.MANAGE_ENROLLMENT)
    device = await device_in_scope(session, principal, device_id)
    now = clock.now()
    cred, password = await enrollment.rotate(session, device_id, now=now)
    audit.record(
        session,
        principal=principal,
        at=now,
        action="credentials.rotate",
        object_type="device",
        object_id=device_id,
        school_id=device.school_id,
    )
    _tell_broker(session, plane, cred.username, revoked=False, rotated=True)
    return Rotated(cred, password)


async def revoke(
    session: AsyncSession,
    principal: Principal,
    clock: Clock,
    device_id: int,
    plane: DevicePlanePort | None = None,
) -> DeviceCredential:
    """Revoke a device's credentials; once committed the broker disconnects it within seconds."""
    require(principal, Permission.MANAGE_ENROLLMENT)
    device = await device_in_scope(session, principal, device_id)
    now = clock.now()
    cred = await enrollment.revoke(session, device_id, now=now)
    audit.record(
        session,
        principal=principal,
        at=now,
        action="credentials.revoke",
        object_type="device",
        object_id=device_id,
        school_id=device.school_id,
    )
    _tell_broker(session, plane, cred.username, revoked=True, rotated=False)
    return cred


def _tell_broker(
    session: AsyncSession, plane: DevicePlanePort | None, username: str, *, revoked: bool, rotated: bool
) -> None:
    """After the commit (the broker reads the committed credential), not before."""
    if plane is None:
        return

    async def sync() -> None:
        await plane.credentials_changed(username, revoked=revoked, rotated=rotated)

    after_commit(session, sync)
