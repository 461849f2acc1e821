"""Districts, schools, rooms, device models, devices, timetables: CRUD plus lifecycle and lesson state."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from fleet.api import schemas as s
from fleet.api.deps import Caller, Cursor, Limit, Session, State
from fleet.api.routes.crud import ObjId, add_crud_routes
from fleet.domain.enums import AiLabTier, CalendarKind, DeviceKind, DeviceStatus, RoomKind, Transport
from fleet.services import timetable as timetables
from fleet.services.inventory import (
    DeviceModelService,
    DeviceService,
    DistrictService,
    RoomService,
    SchoolService,
)
from fleet.services.timetable import BellPeriodService, CalendarService

router = APIRouter(prefix="/api/v1")
FilterId = Annotated[int, Field(ge=1, le=2**31 - 1)] | None
FilterText = Annotated[str, Field(max_length=200)] | None


class _Filters(BaseModel):
    # Not extra="forbid": the same query string also carries cursor and limit.
    model_config = ConfigDict(extra="ignore")


class NoFilters(_Filters):
    pass


class SchoolFilters(_Filters):
    district: FilterId = None


class RoomFilters(_Filters):
    school: FilterId = None
    kind: RoomKind | None = None
    tier: AiLabTier | None = None


class ModelFilters(_Filters):
    kind: DeviceKind | None = None
    vendor: FilterText = None
    supplier: FilterText = None
    transport: Transport | None = None


class DeviceFilters(_Filters):
    school: FilterId = None
    room: FilterId = None
    model: FilterId = None
    kind: DeviceKind | None = None
    status: DeviceStatus | None = None


class PeriodFilters(_Filters):
    school: FilterId = None
    room: FilterId = None
    weekday: Annotated[int, Field(ge=0, le=6)] | None = None


class CalendarFilters(_Filters):
    school: FilterId = None
    kind: CalendarKind | None = None


for _path, _svc, _in, _patch, _out, _filters, _tag, _one in (
    (
        "/districts",
        DistrictService,
        s.DistrictIn,
        s.DistrictPatch,
        s.DistrictOut,
        NoFilters,
        "districts",
        "district",
    ),
    ("/schools", SchoolService, s.SchoolIn, s.SchoolPatch, s.SchoolOut, SchoolFilters, "schools", "school"),
    ("/rooms", RoomService, s.RoomIn, s.RoomPatch, s.RoomOut, RoomFilters, "rooms", "room"),
    (
        "/device-models",
        DeviceModelService,
        s.DeviceModelIn,
        s.DeviceModelPatch,
        s.DeviceModelOut,
        ModelFilters,
        "device-models",
        "device_model",
    ),
    ("/devices", DeviceService, s.DeviceIn, s.DevicePatch, s.DeviceOut, DeviceFilters, "devices", "device"),
    (
        "/bell-periods",
        BellPeriodService,
        s.BellPeriodIn,
        s.BellPeriodPatch,
        s.BellPeriodOut,
        PeriodFilters,
        "timetables",
        "bell_period",
    ),
    (
        "/calendar-entries",
        CalendarService,
        s.CalendarIn,
        s.CalendarPatch,
        s.CalendarOut,
        CalendarFilters,
        "calendar",
        "calendar_entry",
    ),
):
    add_crud_routes(
        router,
        path=_path,
        service=_svc,
        create_model=_in,
        patch_model=_patch,
        out_model=_out,
        filter_model=_filters,
        tag=_tag,
        singular=_one,
    )


@router.post(
    "/devices/{obj_id}/transitions",
    response_model=s.DeviceOut,
    tags=["devices"],
    summary="Move a device through its lifecycle (recorded with who and when)",
)
async def transition_device(
    session: Session, caller: Caller, state: State, obj_id: ObjId, body: s.TransitionIn
) -> Any:
    return await DeviceService(session, caller, state.clock).transition(obj_id, body.to, body.reason)


@router.get(
    "/devices/{obj_id}/history",
    response_model=s.PageOut[s.TransitionOut],
    tags=["devices"],
    summary="A device's lifecycle transitions, oldest first",
)
async def device_history(
    session: Session, caller: Caller, state: State, obj_id: ObjId, cursor: Cursor = None, limit: Limit = 100
) -> Any:
    page = await DeviceService(session, caller, state.clock).history(obj_id, cursor=cursor, limit=limit)
    return {"items": page.items, "total": page.total, "next_cursor": page.next_cursor, "limit": page.limit}


@router.get(
    "/rooms/{obj_id}/lesson",
    response_model=s.LessonStateOut,
    tags=["timetables"],
    summary="Is a lesson on in this room at a time (default now), and which period?",
)
async def room_lesson(
    session: Session,
    caller: Caller,
    state: State,
    obj_id: ObjId,
    at: Annotated[s.Instant | None, Query(description="ISO time with offset; default now")] = None,
) -> Any:
    when, ls = await timetables.room_lesson(session, caller, state.clock, obj_id, at)
    return {
        "room_id": obj_id,
        "at": when,
        "in_lesson": ls.in_lesson,
        "period": ls.period,
        "reason": ls.reason,
        "exam_day": ls.exam_day,
        "local_time": ls.local_time,
    }
