"""Claim tokens: a school's technicians issue, list and revoke the tokens terminals enroll with, and see how
many of the school's devices have enrolled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.clock import Clock
from fleet.domain.enums import DeviceStatus
from fleet.domain.permissions import Permission, Principal
from fleet.persistence.models import Device
from fleet.persistence.models_mqtt import ClaimToken, DeviceCredential, DeviceState
from fleet.services import audit, enrollment
from fleet.services.common import check_school, get_or_404, require, school_in_scope

# A school's list shows at most this many tokens, newest first.
MAX_LIST = 500


@dataclass(frozen=True, slots=True)
class ClaimTokenSpec:
    max_uses: int
    ttl: timedelta
    allow_unknown: bool
    label: str


async def create(
    session: AsyncSession, principal: Principal, clock: Clock, school_id: int, spec: ClaimTokenSpec
) -> enrollment.IssuedToken:
    """A claim token for terminals of one school; the token text is in the result only."""
    require(principal, Permission.MANAGE_ENROLLMENT)
    await school_in_scope(session, principal, school_id)
    now = clock.now()
    issued = await enrollment.create_claim_token(
        session,
        school_id=school_id,
        max_uses=spec.max_uses,
        ttl=spec.ttl,
        allow_unknown=spec.allow_unknown,
        label=spec.label,
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
            "max_uses": spec.max_uses,
            "allow_unknown": spec.allow_unknown,
            "expires_at": issued.row.expires_at.isoformat(),
        },
    )
    return issued


async def list_for_school(session: AsyncSession, principal: Principal, school_id: int) -> list[ClaimToken]:
    require(principal, Permission.MANAGE_ENROLLMENT)
    await school_in_scope(session, principal, school_id)
    rows = await session.execute(
        select(ClaimToken)
        .where(ClaimToken.school_id == school_id)
        .order_by(ClaimToken.id.desc())
        .limit(MAX_LIST)
    )
    return list(rows.scalars().all())


async def revoke(session: AsyncSession, principal: Principal, clock: Clock, token_id: int) -> ClaimToken:
    require(principal, Permission.MANAGE_ENROLLMENT)
    row: ClaimToken = await get_or_404(session, ClaimToken, token_id, "claim token")
    check_school(principal, row.school_id, "claim token", token_id)
    now = clock.now()
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


@dataclass(frozen=True, slots=True)
class EnrollmentProgress:
    """A school's devices in use or on their way (not retired or lost): how many are enrolled, how many
    are online now."""

    devices: int
    enrolled: int
    online: int


async def progress(session: AsyncSession, principal: Principal, school_id: int) -> EnrollmentProgress:
    require(principal, Permission.MANAGE_ENROLLMENT)
    await school_in_scope(session, principal, school_id)
    live = select(DeviceCredential.device_id).where(DeviceCredential.revoked_at.is_(None)).scalar_subquery()
    row = (
        await session.execute(
            select(
                func.count(Device.id),
                func.count(Device.id).filter(Device.id.in_(live)),
                func.count(Device.id).filter(DeviceState.online.is_(True)),
            )
            .outerjoin(DeviceState, DeviceState.device_id == Device.id)
            .where(
                Device.school_id == school_id,
                Device.status.not_in([DeviceStatus.RETIRED.value, DeviceStatus.LOST.value]),
            )
        )
    ).one()
    return EnrollmentProgress(int(row[0]), int(row[1]), int(row[2]))
