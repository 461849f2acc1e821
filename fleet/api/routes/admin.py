"""Tokens, audit log, bulk import and export, health."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from fleet.api import schemas as s
from fleet.api.deps import Caller, Cursor, Limit, Session, State
from fleet.api.routes.crud import ObjId
from fleet.errors import ImportRejected
from fleet.i18n import negotiate, normalize, use_locale
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
    since: Annotated[
        s.Instant | None, Query(description="entries at or after this time (with offset)")
    ] = None,
    until: Annotated[s.Instant | None, Query(description="entries before this time (with offset)")] = None,
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


@router.get(
    "/audit/verify",
    response_model=s.AuditVerifyOut,
    tags=["audit"],
    summary="Verify the audit hash chain (district-wide admins and auditors)",
    description="Walks every record: an edited, deleted or reordered record shows as `break` with its place.",
)
async def verify_audit(session: Session, caller: Caller) -> Any:
    report = await audit.verify_chain(session, caller)
    brk = report.first_break
    return {
        "ok": report.ok,
        "checked": report.checked,
        "last_seq": report.last_seq,
        "last_hash": report.last_hash,
        "break": None
        if brk is None
        else {"seq": brk.seq, "id": brk.id, "reason": brk.reason, "detail": brk.detail},
    }


@router.get(
    "/audit/export",
    tags=["audit"],
    response_class=Response,
    summary="The audit log for inspectors: CSV (UTF-8 with BOM) or XLSX, in chain order with its hashes",
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                audit.EXPORT_MEDIA_TYPES["xlsx"]: {"schema": {"type": "string", "format": "binary"}},
            }
        }
    },
)
async def export_audit(
    session: Session,
    caller: Caller,
    format: Annotated[str, Query(pattern="^(csv|xlsx)$", description="csv | xlsx")] = "csv",
    school: FilterId = None,
    since: Annotated[s.Instant | None, Query(description="records at or after this time")] = None,
    until: Annotated[s.Instant | None, Query(description="records before this time")] = None,
) -> Response:
    body = await audit.export_entries(session, caller, format, school_id=school, since=since, until=until)
    return Response(
        body,
        media_type=audit.EXPORT_MEDIA_TYPES[format],
        headers={"Content-Disposition": f'attachment; filename="audit.{format}"'},
    )


ImportSheet = Annotated[str | None, Query(max_length=31, description="XLSX: the sheet (default: the first)")]
ImportEncoding = Annotated[
    str | None, Query(max_length=20, description="CSV: force utf-8, gb18030 or gbk (default: detected)")
]
Lang = Annotated[str | None, Query(max_length=20, description="zh-CN or en (default: Accept-Language)")]
ErrorsAs = Annotated[
    str, Query(pattern="^(json|csv)$", description="on rejection: every bad row as JSON, or a CSV download")
]


async def _run_import(
    kind: str,
    request: Request,
    session: Any,
    caller: Any,
    state: Any,
    file: UploadFile,
    *,
    dry_run: bool,
    sheet: str | None,
    encoding: str | None,
    lang: str | None,
    errors: str,
) -> Any:
    loc = negotiate(
        user=lang, accept_language=request.headers.get("accept-language"), default=state.settings.locale
    )
    fn = imports.import_devices if kind == "devices" else imports.import_rooms
    with use_locale(loc):
        try:
            result = await fn(
                session,
                caller,
                state.clock,
                await file.read(),
                dry_run=dry_run,
                filename=file.filename,
                sheet=sheet,
                encoding=encoding,
            )
        except ImportRejected as err:
            if errors != "csv":
                raise
            return Response(
                imports.errors_csv(err.details or []),
                status_code=422,
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{kind}-import-errors.csv"'},
            )
    return {"kind": result.kind, "created": result.created, "dry_run": result.dry_run}


@router.post(
    "/imports/devices",
    response_model=s.ImportOut,
    status_code=201,
    tags=["imports"],
    summary="Import a delivery of devices from XLSX or CSV: all rows or none",
    description="Columns (or their Chinese names): "
    + ", ".join(imports.DEVICE_COLUMNS)
    + ". Required: "
    + ", ".join(imports.DEVICE_REQUIRED)
    + ". XLSX, or CSV in UTF-8, UTF-8 with BOM or GB18030/GBK. On any bad row nothing is imported and the "
    "answer lists every bad row (row, column, value, reason); errors=csv answers the list as a CSV download.",
)
async def import_devices(
    request: Request,
    session: Session,
    caller: Caller,
    state: State,
    file: Annotated[UploadFile, File(description="the delivery file (XLSX or CSV)")],
    dry_run: bool = False,
    sheet: ImportSheet = None,
    encoding: ImportEncoding = None,
    lang: Lang = None,
    errors: ErrorsAs = "json",
) -> Any:
    return await _run_import(
        "devices", request, session, caller, state, file,
        dry_run=dry_run, sheet=sheet, encoding=encoding, lang=lang, errors=errors,
    )  # fmt: skip


@router.post(
    "/imports/rooms",
    response_model=s.ImportOut,
    status_code=201,
    tags=["imports"],
    summary="Import rooms from XLSX or CSV: all rows or none",
    description="Columns: " + ", ".join(imports.ROOM_COLUMNS) + ".",
)
async def import_rooms(
    request: Request,
    session: Session,
    caller: Caller,
    state: State,
    file: Annotated[UploadFile, File(description="the rooms file (XLSX or CSV)")],
    dry_run: bool = False,
    sheet: ImportSheet = None,
    encoding: ImportEncoding = None,
    lang: Lang = None,
    errors: ErrorsAs = "json",
) -> Any:
    return await _run_import(
        "rooms", request, session, caller, state, file,
        dry_run=dry_run, sheet=sheet, encoding=encoding, lang=lang, errors=errors,
    )  # fmt: skip


ExportFormat = Annotated[str, Query(pattern="^(csv|xlsx)$", description="csv or xlsx")]
Bom = Annotated[
    bool | None, Query(description="CSV: UTF-8 BOM for Excel (default: on when the site is zh-CN)")
]


def _export_response(kind: str, body: bytes, fmt: str) -> Response:
    media = "text/csv; charset=utf-8" if fmt == "csv" else imports_xlsx_media
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{kind}.{fmt}"'}
    )


imports_xlsx_media = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@router.get(
    "/exports/devices",
    response_class=Response,
    tags=["imports"],
    summary="Export devices as CSV or XLSX in the import format (lossless round trip)",
)
async def export_devices(
    session: Session,
    caller: Caller,
    state: State,
    school: FilterId = None,
    format: ExportFormat = "csv",
    bom: Bom = None,
) -> Any:
    with_bom = bom if bom is not None else normalize(state.settings.locale) == "zh_CN"
    body = await imports.export_devices(session, caller, school_id=school, fmt=format, bom=with_bom)
    return _export_response("devices", body, format)


@router.get(
    "/exports/rooms",
    response_class=Response,
    tags=["imports"],
    summary="Export rooms as CSV or XLSX in the import format",
)
async def export_rooms(
    session: Session,
    caller: Caller,
    state: State,
    school: FilterId = None,
    format: ExportFormat = "csv",
    bom: Bom = None,
) -> Any:
    with_bom = bom if bom is not None else normalize(state.settings.locale) == "zh_CN"
    body = await imports.export_rooms(session, caller, school_id=school, fmt=format, bom=with_bom)
    return _export_response("rooms", body, format)


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
