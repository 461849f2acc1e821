"""Bulk import and export over HTTP: deliveries of devices and rooms (XLSX or CSV), all rows or none."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import Response

from fleet.api import schemas as s
from fleet.api.deps import Caller, Session, State
from fleet.errors import ImportRejected
from fleet.i18n import negotiate, normalize, use_locale
from fleet.services import imports

router = APIRouter(prefix="/api/v1")
FilterId = Annotated[int | None, Query(ge=1, le=2**31 - 1)]


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
