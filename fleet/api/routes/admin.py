"""Tokens, audit log, bulk import and export, health."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from fleet.api import schemas as s
from fleet.api.deps import Caller, Cursor, Limit, Session, State
from fleet.api.routes.crud import ObjId
from fleet.services import audit, imports, tokens

router = APIRouter(prefix="/api/v1")
health = APIRouter()
FilterId = Annotated[int | None, Query(ge=1, le=2**31 - 1)]


def _page(page: Any) -> dict[str, Any]:
    return {"items": page.items, "total": page.total, "next_cursor": page.next_cursor, "limit": page.limit}


@router.get(
    "/tokens", response_model=s.PageOut[s.TokenOut], tags=["tokens"], summary="List API tokens (admin)"
)
async def list_tokens(session: Session, caller: Caller, cursor: Cursor = None, limit: Limit = 100) -> Any:
    return _page(await tokens.list_tokens(session, caller, cursor=cursor, limit=limit))


@router.post(
    "/tokens",
    response_model=s.TokenCreatedOut,
    status_code=201,
    tags=["tokens"],
    summary="Create an API token; the secret is in this response only",
)
async def create_token(session: Session, caller: Caller, state: State, body: s.TokenIn) -> Any:
    row, plain = await tokens.create_token(
        session,
        principal=caller,
        at=state.clock.now(),
        name=body.name,
        role=body.role,
        school_ids=body.school_ids,
        district_wide=body.district_wide,
        expires_at=body.expires_at,
    )
    return {**s.TokenOut.model_validate(row).model_dump(), "token": plain}


@router.delete("/tokens/{obj_id}", response_model=s.TokenOut, tags=["tokens"], summary="Revoke an API token")
async def revoke_token(session: Session, caller: Caller, state: State, obj_id: ObjId) -> Any:
    return await tokens.revoke_token(session, caller, obj_id, state.clock.now())


@router.get(
    "/audit",
    response_model=s.PageOut[s.AuditOut],
    tags=["audit"],
    summary="The audit log (admins and auditors; read-only)",
)
async def list_audit(
    session: Session,
    caller: Caller,
    cursor: Cursor = None,
    limit: Limit = 100,
    action: Annotated[str | None, Query(max_length=64)] = None,
    object_type: Annotated[str | None, Query(max_length=64)] = None,
    object_id: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=120)] = None,
    school: FilterId = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Any:
    return _page(
        await audit.list_entries(
            session,
            caller,
            cursor=cursor,
            limit=limit,
            action=action,
            object_type=object_type,
            object_id=object_id,
            actor=actor,
            school_id=school,
            since=since,
            until=until,
        )
    )


@router.post(
    "/imports/devices",
    response_model=s.ImportOut,
    status_code=201,
    tags=["imports"],
    summary="Import a delivery of devices from CSV: all rows or none",
    description="Columns: "
    + ", ".join(imports.DEVICE_COLUMNS)
    + ". Required: "
    + ", ".join(imports.DEVICE_REQUIRED)
    + ". On any bad row nothing is imported and the answer "
    "lists every bad row with its row number, column and reason.",
)
async def import_devices(
    session: Session,
    caller: Caller,
    state: State,
    file: Annotated[UploadFile, File(description="the delivery CSV")],
    dry_run: bool = False,
) -> Any:
    text_ = imports.decode_upload(await file.read())
    result = await imports.import_devices(session, caller, state.clock, text_, dry_run=dry_run)
    return {"kind": result.kind, "created": result.created, "dry_run": result.dry_run}


@router.post(
    "/imports/rooms",
    response_model=s.ImportOut,
    status_code=201,
    tags=["imports"],
    summary="Import rooms from CSV: all rows or none",
    description="Columns: " + ", ".join(imports.ROOM_COLUMNS) + ".",
)
async def import_rooms(
    session: Session,
    caller: Caller,
    state: State,
    file: Annotated[UploadFile, File(description="the rooms CSV")],
    dry_run: bool = False,
) -> Any:
    text_ = imports.decode_upload(await file.read())
    result = await imports.import_rooms(session, caller, state.clock, text_, dry_run=dry_run)
    return {"kind": result.kind, "created": result.created, "dry_run": result.dry_run}


@router.get(
    "/exports/devices",
    response_class=PlainTextResponse,
    tags=["imports"],
    summary="Export devices as CSV in the import format (lossless round trip)",
)
async def export_devices(session: Session, caller: Caller, school: FilterId = None) -> Any:
    return PlainTextResponse(
        await imports.export_devices(session, caller, school_id=school),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="devices.csv"'},
    )


@router.get(
    "/exports/rooms",
    response_class=PlainTextResponse,
    tags=["imports"],
    summary="Export rooms as CSV in the import format",
)
async def export_rooms(session: Session, caller: Caller, school: FilterId = None) -> Any:
    return PlainTextResponse(
        await imports.export_rooms(session, caller, school_id=school),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="rooms.csv"'},
    )


@health.get("/healthz", tags=["health"], summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get("/readyz", tags=["health"], summary="Readiness: the database answers")
async def readyz(state: State) -> Any:
    try:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as err:  # noqa: BLE001 - any database failure means "not ready"
        return JSONResponse({"status": "unavailable", "database": type(err).__name__}, status_code=503)
    return {"status": "ok", "database": "ok"}
