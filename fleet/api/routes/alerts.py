"""Alerts over HTTP: list per school or room, acknowledge, resolve."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from fleet.api.deps import Caller, Now, Session
from fleet.api.routes.params import MAX_LIST, ObjId
from fleet.api.schemas import UtcOut
from fleet.persistence.models_mqtt import Alert
from fleet.services import alerts

router = APIRouter(prefix="/api/v1")


class AlertOut(BaseModel):
    id: int
    device_id: int
    school_id: int
    room_id: int | None
    rule: str
    severity: str
    status: str
    detail: str
    occurrences: int
    opened_at: UtcOut
    last_seen_at: UtcOut
    acknowledged_at: UtcOut | None
    acknowledged_by: str | None
    resolved_at: UtcOut | None
    resolved_by: str | None


def _alert_out(a: Alert) -> AlertOut:
    return AlertOut(
        id=a.id,
        device_id=a.device_id,
        school_id=a.school_id,
        room_id=a.room_id,
        rule=a.rule,
        severity=a.severity,
        status=a.status,
        detail=a.detail,
        occurrences=a.occurrences,
        opened_at=a.opened_at,
        last_seen_at=a.last_seen_at,
        acknowledged_at=a.acknowledged_at,
        acknowledged_by=a.acknowledged_by,
        resolved_at=a.resolved_at,
        resolved_by=a.resolved_by,
    )


@router.get("/alerts", tags=["alerts"])
async def list_alerts(
    caller: Caller,
    session: Session,
    school: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    room: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    status: Literal["open", "acknowledged", "resolved", "active"] | None = "active",
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[AlertOut]:
    """Alerts of the caller's schools, per school or room; `active` = open or acknowledged."""
    rows = await alerts.list_alerts(
        session, caller, school_id=school, room_id=room, status=status, limit=limit, offset=offset
    )
    return [_alert_out(a) for a in rows]


@router.post("/alerts/{obj_id}/ack", tags=["alerts"])
async def acknowledge_alert(obj_id: ObjId, caller: Caller, session: Session, clock: Now) -> AlertOut:
    return _alert_out(await alerts.acknowledge(session, caller, clock, obj_id))


@router.post("/alerts/{obj_id}/resolve", tags=["alerts"])
async def resolve_alert(obj_id: ObjId, caller: Caller, session: Session, clock: Now) -> AlertOut:
    return _alert_out(await alerts.resolve(session, caller, clock, obj_id))
