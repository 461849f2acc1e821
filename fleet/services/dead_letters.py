"""Refused MQTT messages, kept for operators: why each was refused, and a preview of what it said."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.permissions import Permission, Principal
from fleet.errors import PermissionDenied
from fleet.persistence.models_mqtt import DeadLetter
from fleet.services.common import require

# At most this many per call.
MAX_LIST = 500


async def list_dead_letters(
    session: AsyncSession, principal: Principal, *, reason: str | None = None, limit: int = 100
) -> list[DeadLetter]:
    """Newest first. District-wide only: a refused message may name no school."""
    require(principal, Permission.READ_AUDIT)
    if not principal.district_wide:
        raise PermissionDenied("dead letters are district-wide; a school-scoped token cannot read them")
    q = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(min(limit, MAX_LIST))
    if reason:
        q = q.where(DeadLetter.reason == reason)
    return list((await session.execute(q)).scalars().all())
