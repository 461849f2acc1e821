"""Room stocktake over HTTP: start a count of a room, scan codes into it, settle differences, finish."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from fleet.api.deps import Caller, Now, Session
from fleet.api.routes.params import ObjId
from fleet.api.schemas import In, UtcOut
from fleet.domain import stocktake as rules
from fleet.domain.stocktake import Resolution, WindowChoice
from fleet.services import stocktake

router = APIRouter(prefix="/api/v1")


class StocktakeIn(In):
    room_id: ObjId
    # Devices that reported over MQTT from the room in this window (school time zone) are pre-marked found.
    window: Literal["today", "since_yesterday", "week", "none"] = "today"


class ScanIn(In):
    # A label's content (the device's console URL) or a typed asset tag or serial number.
    code: str = Field(min_length=1, max_length=rules.MAX_CODE)


class ResolveIn(In):
    action: Literal["moved_here", "marked_lost"]
    reason: str = Field(min_length=1, max_length=stocktake.MAX_REASON)


class LineOut(BaseModel):
    device_id: int
    asset_tag: str
    serial_number: str
    model: str
    status: str
    seen_by_network: bool
    scanned_at: UtcOut | None
    resolution: str | None
    home_room: str | None
    home_school: str | None


class StocktakeOut(BaseModel):
    id: int
    school_id: int
    room_id: int
    room: str
    started_by: str
    started_at: UtcOut
    window_start: UtcOut | None
    window_end: UtcOut | None
    finished_at: UtcOut | None
    finished_by: str | None
    tally: dict[str, int]
    lines: list[LineOut]


class ScanOut(BaseModel):
    outcome: Literal["found", "already", "unexpected", "missing"]
    device_id: int
    asset_tag: str


def _out(v: stocktake.CountView) -> StocktakeOut:
    st = v.stocktake
    return StocktakeOut(
        id=st.id,
        school_id=st.school_id,
        room_id=st.room_id,
        room=v.room.name,
        started_by=st.started_by,
        started_at=st.started_at,
        window_start=st.window_start,
        window_end=st.window_end,
        finished_at=st.finished_at,
        finished_by=st.finished_by,
        tally=v.tally.as_dict(),
        lines=[
            LineOut(
                device_id=x.device_id,
                asset_tag=x.asset_tag,
                serial_number=x.serial_number,
                model=x.model,
                status=x.status,
                seen_by_network=x.seen_by_network,
                scanned_at=x.scanned_at,
                resolution=x.resolution,
                home_room=x.home_room,
                home_school=x.home_school,
            )
            for x in v.lines
        ],
    )


@router.post("/stocktakes", status_code=201, tags=["stocktake"])
async def start_stocktake(body: StocktakeIn, caller: Caller, session: Session, clock: Now) -> StocktakeOut:
    """Open a count of a room; devices the network heard from in the window are pre-marked found."""
    st = await stocktake.start(session, caller, clock, body.room_id, WindowChoice(body.window))
    return _out(await stocktake.view(session, caller, st.id))


@router.get("/stocktakes/{obj_id}", tags=["stocktake"])
async def get_stocktake(obj_id: ObjId, caller: Caller, session: Session) -> StocktakeOut:
    return _out(await stocktake.view(session, caller, obj_id))


class StocktakeSummaryOut(BaseModel):
    id: int
    school_id: int
    room_id: int
    room: str
    started_by: str
    started_at: UtcOut
    finished_at: UtcOut | None


@router.get("/stocktakes", tags=["stocktake"])
async def list_stocktakes(
    caller: Caller, session: Session, room: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None
) -> list[StocktakeSummaryOut]:
    """The caller's latest counts (open ones first), optionally of one room."""
    return [
        StocktakeSummaryOut(
            id=st.id,
            school_id=st.school_id,
            room_id=st.room_id,
            room=r.name,
            started_by=st.started_by,
            started_at=st.started_at,
            finished_at=st.finished_at,
        )
        for st, r in await stocktake.recent(session, caller, room_id=room)
    ]


@router.post("/stocktakes/{obj_id}/scans", tags=["stocktake"])
async def scan_code(obj_id: ObjId, body: ScanIn, caller: Caller, session: Session, clock: Now) -> ScanOut:
    """A scanned label or typed tag: found here, already counted, or a device that belongs elsewhere."""
    r = await stocktake.scan(session, caller, clock, obj_id, body.code)
    return ScanOut(outcome=r.outcome, device_id=r.device_id, asset_tag=r.asset_tag)


@router.post("/stocktakes/{obj_id}/devices/{device_id}/resolve", tags=["stocktake"])
async def resolve_line(
    obj_id: ObjId, device_id: ObjId, body: ResolveIn, caller: Caller, session: Session, clock: Now
) -> StocktakeOut:
    """Move an unexpected device here, or mark a missing one lost (through the device lifecycle)."""
    await stocktake.resolve(session, caller, clock, obj_id, device_id, Resolution(body.action), body.reason)
    return _out(await stocktake.view(session, caller, obj_id))


@router.post("/stocktakes/{obj_id}/finish", tags=["stocktake"])
async def finish_stocktake(obj_id: ObjId, caller: Caller, session: Session, clock: Now) -> StocktakeOut:
    """Close the count; who, when, found, missing and moved go to the audit log."""
    await stocktake.finish(session, caller, clock, obj_id)
    return _out(await stocktake.view(session, caller, obj_id))
