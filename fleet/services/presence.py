"""A device's presence transitions (online, offline, expected or not, and why)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.permissions import Permission, Principal
from fleet.persistence.models_mqtt import PresenceTransition
from fleet.services.common import device_in_scope, require

# At most this many transitions per call.
MAX_LIST = 500


async def history(
    session: AsyncSession, principal: Principal, device_id: int, *, limit: int = 100
) -> list[PresenceTransition]:
    """Presence transitions, newest first."""
    require(principal, Permission.READ_OPERATIONS)
    await device_in_scope(session, principal, device_id)
    rows = await session.execute(
        select(PresenceTransition)
        .where(PresenceTransition.device_id == device_id)
        .order_by(PresenceTransition.at.desc(), PresenceTransition.id.desc())
        .limit(min(limit, MAX_LIST))
    )
    return list(rows.scalars().all())
