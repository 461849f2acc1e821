"""Alerts the ingest path opened: list them per school or room, acknowledge, resolve."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.clock import Clock
from fleet.domain.permissions import Permission, Principal
from fleet.errors import Conflict, NotFound
from fleet.persistence.models_mqtt import Alert
from fleet.services import audit
from fleet.services.common import check_school, require

# At most this many alerts per call.
MAX_LIST = 500
StatusFilter = Literal["open", "acknowledged", "resolved", "active"]


async def list_alerts(
    session: AsyncSession,
    principal: Principal,
    *,
    school_id: int | None = None,
    room_id: int | None = None,
    status: StatusFilter | None = "active",
    severity: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Alert]:
    """Alerts of the principal's schools, newest first; `active` = open or acknowledged."""
    require(principal, Permission.READ_OPERATIONS)
    q = select(Alert).order_by(Alert.opened_at.desc(), Alert.id.desc())
    if not principal.district_wide:
        q = q.where(Alert.school_id.in_(sorted(principal.school_ids)))
    if school_id is not None:
        q = q.where(Alert.school_id == school_id)
    if room_id is not None:
        q = q.where(Alert.room_id == room_id)
    if status == "active":
        q = q.where(Alert.status != "resolved")
    elif status is not None:
        q = q.where(Alert.status == status)
    if severity is not None:
        q = q.where(Alert.severity == severity)
    return list((await session.execute(q.limit(min(limit, MAX_LIST)).offset(offset))).scalars().all())


async def acknowledge(session: AsyncSession, principal: Principal, clock: Clock, alert_id: int) -> Alert:
    alert = await _in_scope(session, principal, alert_id)
    now = clock.now()
    if alert.status == "resolved":
        raise Conflict("alert is already resolved")
    if alert.status == "open":
        alert.status = "acknowledged"
        alert.acknowledged_at = now
        alert.acknowledged_by = principal.actor
    await session.flush()
    _audit(session, principal, now, alert, "ack")
    return alert


async def resolve(session: AsyncSession, principal: Principal, clock: Clock, alert_id: int) -> Alert:
    alert = await _in_scope(session, principal, alert_id)
    now = clock.now()
    if alert.status != "resolved":
        alert.status = "resolved"
        alert.dedup_key = None
        alert.resolved_at = now
        alert.resolved_by = principal.actor
    await session.flush()
    _audit(session, principal, now, alert, "resolve")
    return alert


async def _in_scope(session: AsyncSession, principal: Principal, alert_id: int) -> Alert:
    require(principal, Permission.MANAGE_ALERTS)
    alert = await session.get(Alert, alert_id)
    if alert is None:
        raise NotFound(f"alert {alert_id} not found")
    check_school(principal, alert.school_id, "alert", alert_id)
    return alert


def _audit(session: AsyncSession, principal: Principal, now: datetime, alert: Alert, action: str) -> None:
    audit.record(
        session,
        principal=principal,
        at=now,
        action=f"alert.{action}",
        object_type="alert",
        object_id=alert.id,
        school_id=alert.school_id,
    )
