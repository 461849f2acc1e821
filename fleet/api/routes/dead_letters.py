"""Refused MQTT messages over HTTP (district-wide)."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from fleet.api.deps import Caller, Session
from fleet.api.routes.params import MAX_LIST
from fleet.api.schemas import UtcOut
from fleet.services.dead_letters import list_dead_letters

router = APIRouter(prefix="/api/v1")


class DeadLetterOut(BaseModel):
    id: int
    received_at: UtcOut
    reason: str
    topic: str
    identity: str | None
    payload_size: int
    payload_preview: str | None
    detail: str


@router.get("/dead-letters", tags=["operations"])
async def dead_letters(
    caller: Caller,
    session: Session,
    reason: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
) -> list[DeadLetterOut]:
    """Refused MQTT messages (newest first). District-wide: a refused message may name no school."""
    rows = await list_dead_letters(session, caller, reason=reason, limit=limit)
    return [
        DeadLetterOut(
            id=r.id,
            received_at=r.received_at,
            reason=r.reason,
            topic=r.topic,
            identity=r.identity,
            payload_size=r.payload_size,
            payload_preview=r.payload[:512].decode("utf-8", "replace") if r.payload else None,
            detail=r.detail,
        )
        for r in rows
    ]
