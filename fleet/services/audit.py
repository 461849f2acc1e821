"""The append-only audit log. There is no update or delete path, in code or API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.permissions import Permission, Principal
from fleet.persistence.models import AuditEntry
from fleet.services.common import Page, paginate, require


def record(
    session: AsyncSession,
    *,
    principal: Principal,
    at: datetime,
    action: str,
    object_type: str,
    object_id: Any,
    school_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    summary: str | None = None,
) -> AuditEntry:
    """Add an audit entry to the caller's transaction (it commits or rolls back with the change)."""
    entry = AuditEntry(
        at=at,
        actor=principal.actor,
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        school_id=school_id,
        before=before,
        after=after,
        summary=summary,
    )
    session.add(entry)
    return entry


async def list_entries(
    session: AsyncSession,
    principal: Principal,
    *,
    cursor: str | None,
    limit: int,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    actor: str | None = None,
    school_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page[AuditEntry]:
    require(principal, Permission.READ_AUDIT)
    stmt = select(AuditEntry)
    if not principal.district_wide:
        # School-scoped auditors see their schools' entries; district-level entries have no school.
        stmt = stmt.where(or_(AuditEntry.school_id.in_(sorted(principal.school_ids) or [-1])))
    for col, val in (
        (AuditEntry.action, action),
        (AuditEntry.object_type, object_type),
        (AuditEntry.object_id, object_id),
        (AuditEntry.actor, actor),
        (AuditEntry.school_id, school_id),
    ):
        if val is not None:
            stmt = stmt.where(col == val)
    if since is not None:
        stmt = stmt.where(AuditEntry.at >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.at < until)
    return await paginate(session, stmt, AuditEntry, cursor, limit)
