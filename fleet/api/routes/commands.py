"""Device commands over HTTP: send to a device, room or school; follow a batch; cancel what is not sent."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fleet.api.deps import Caller, Now, Plane, Session
from fleet.api.routes.params import MAX_LIST, ObjId, StrictIn
from fleet.api.schemas import UtcOut
from fleet.services import commands

router = APIRouter(prefix="/api/v1")
BatchId = Annotated[str, Field(max_length=64)]


class Target(StrictIn):
    kind: Literal["device", "room", "school"]
    id: ObjId


class CommandIn(StrictIn):
    target: Target
    name: Literal["reboot", "lock", "unlock", "set_policy", "diagnostics"]
    args: dict[str, Any] = Field(default_factory=dict)
    ttl_seconds: int = Field(
        int(commands.DEFAULT_TTL.total_seconds()), ge=10, le=int(commands.MAX_TTL.total_seconds())
    )
    timeout_seconds: int = Field(commands.DEFAULT_TIMEOUT_S, ge=5, le=commands.MAX_TIMEOUT_S)


class CommandRow(BaseModel):
    correlation_id: str
    device_id: int
    status: str
    created_at: UtcOut
    expires_at: UtcOut
    sent_at: UtcOut | None
    acked_at: UtcOut | None
    ack_reason: str | None
    finished_at: UtcOut | None
    result_code: str | None
    result_detail: dict[str, Any] | None


class BatchOut(BaseModel):
    batch_id: str
    name: str
    target_kind: str
    target_id: int
    total: int
    done: int
    by_status: dict[str, int]
    commands: list[CommandRow]


def _batch_out(p: dict[str, Any]) -> BatchOut:
    rows = [
        CommandRow(
            correlation_id=c.correlation_id,
            device_id=c.device_id,
            status=c.status,
            created_at=c.created_at,
            expires_at=c.expires_at,
            sent_at=c.sent_at,
            acked_at=c.acked_at,
            ack_reason=c.ack_reason,
            finished_at=c.finished_at,
            result_code=c.result_code,
            result_detail=c.result_detail,
        )
        for c in p["commands"][:MAX_LIST]
    ]
    return BatchOut(
        batch_id=p["batch_id"],
        name=p["name"],
        target_kind=p["target_kind"],
        target_id=p["target_id"],
        total=p["total"],
        done=p["done"],
        by_status=p["by_status"],
        commands=rows,
    )


@router.post("/commands", status_code=202, tags=["commands"])
async def send_command(
    body: CommandIn, caller: Caller, session: Session, clock: Now, plane: Plane
) -> BatchOut:
    """Queue a command for a device, a room or a school; offline devices get it when they reconnect."""
    spec = commands.CommandSpec(
        target_kind=body.target.kind,
        target_id=body.target.id,
        name=body.name,
        args=body.args,
        ttl=timedelta(seconds=body.ttl_seconds),
        timeout_s=body.timeout_seconds,
    )
    return _batch_out(await commands.send(session, caller, clock, spec, plane))


@router.get("/commands/{obj_id}", tags=["commands"])
async def command_progress(obj_id: BatchId, caller: Caller, session: Session) -> BatchOut:
    return _batch_out(await commands.batch_progress(session, caller, obj_id))


@router.post("/commands/{obj_id}/cancel", tags=["commands"])
async def cancel_commands(obj_id: BatchId, caller: Caller, session: Session, clock: Now) -> BatchOut:
    return _batch_out(await commands.cancel_batch(session, caller, clock, obj_id))
