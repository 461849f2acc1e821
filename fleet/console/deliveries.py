"""Deliveries: upload a device file, see the dry run with every bad row (row, column, reason; downloadable),
then commit all rows or none; export the inventory in the import format. Calls fleet/services/imports.py,
the same use case as `POST /api/v1/imports/devices` and `labfleet import devices`."""

from __future__ import annotations

import base64
import csv
import io
from typing import Any

from fastapi import APIRouter, Response
from starlette.datastructures import UploadFile

from fleet.console.app import ConsoleRoute, UserPage
from fleet.domain.permissions import Permission
from fleet.errors import ImportRejected, InvalidInput
from fleet.i18n import _, gettext
from fleet.services import imports
from fleet.services.common import require

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def _bad_rows_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([_("Row"), _("Column"), _("Reason")])
    for r in rows:
        w.writerow([r.get("row"), r.get("column") or "", r.get("reason")])
    # UTF-8 with BOM: Excel on Chinese Windows opens it with the right characters.
    return "\ufeff" + buf.getvalue()


@router.get("/deliveries")
async def form(page: UserPage) -> Response:
    require(page.principal, Permission.MANAGE_DEVICES)
    return page.render("deliveries.html", nav="deliveries", stage="upload", errors={})


async def _text_of(page: UserPage) -> tuple[str | None, dict[str, str]]:
    upload = page.form.get("file")
    if isinstance(upload, UploadFile) and upload.filename:
        data = await upload.read()
    elif page.field("content"):
        data = base64.b64decode(page.field("content"), validate=False)
    else:
        return None, {"file": _("Choose a file.")}
    try:
        return imports.decode_upload(data), {}
    except InvalidInput as err:
        return None, {"file": gettext(err.message)}


@router.post("/deliveries/preview")
async def preview(page: UserPage) -> Response:
    require(page.principal, Permission.MANAGE_DEVICES)
    text, errors = await _text_of(page)
    if text is None:
        return page.render("deliveries.html", status=422, nav="deliveries", stage="upload", errors=errors)
    content = base64.b64encode(text.encode()).decode()
    try:
        result = await imports.import_devices(page.db, page.principal, page.state.clock, text, dry_run=True)
    except ImportRejected as err:
        bad = [
            {"row": d.get("row"), "column": d.get("column"), "reason": gettext(str(d.get("reason", "")))}
            for d in (err.details or [])
            if isinstance(d, dict)
        ]
        await page.rollback()
        return page.render(
            "deliveries.html",
            status=422,
            nav="deliveries",
            stage="rejected",
            message=gettext(err.message),
            bad=bad,
            bad_csv=base64.b64encode(_bad_rows_csv(bad).encode()).decode(),
            errors={},
        )
    await page.rollback()  # a dry run writes nothing, whatever the service flushed
    return page.render(
        "deliveries.html", nav="deliveries", stage="preview", result=result, content=content, errors={}
    )


@router.post("/deliveries/commit")
async def commit(page: UserPage) -> Response:
    require(page.principal, Permission.MANAGE_DEVICES)
    text, errors = await _text_of(page)
    if text is None:
        return page.render("deliveries.html", status=422, nav="deliveries", stage="upload", errors=errors)
    try:
        result = await imports.import_devices(page.db, page.principal, page.state.clock, text, dry_run=False)
    except ImportRejected:
        await page.rollback()
        return page.render(
            "deliveries.html",
            status=409,
            nav="deliveries",
            stage="upload",
            errors={"file": _("The file no longer passes the checks; preview it again.")},
        )
    return page.render("deliveries.html", nav="deliveries", stage="done", result=result, errors={})


@router.get("/deliveries/export.csv")
async def export(page: UserPage, school: str = "") -> Response:
    text = await imports.export_devices(
        page.db, page.principal, school_id=int(school) if school.isdigit() and len(school) <= 10 else None
    )
    return Response(
        "\ufeff" + text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="devices.csv"', "Cache-Control": "no-store"},
    )
