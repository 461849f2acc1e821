"""A device's presence transitions over HTTP."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from fleet.api.deps import Caller, Session
from fleet.api.routes.params import MAX_LIST, ObjId
from fleet.api.schemas import UtcOut
from fleet.services import presence

router = APIRouter(prefix="/api/v1")


class PresenceOut(BaseModel):
    at: UtcOut
    online: bool
    expected: bool | None
    cause: str


@router.get("/devices/{obj_id}/presence", tags=["devices"])
async def device_presence(
    obj_id: ObjId, caller: Caller, session: Session, limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100
) -> list[PresenceOut]:
    """Presence transitions, newest first."""
    rows = await presence.history(session, caller, obj_id, limit=limit)
    return [PresenceOut(at=r.at, online=r.online, expected=r.expected, cause=r.cause) for r in rows]
