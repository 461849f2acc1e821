"""Deliveries: upload a device file (XLSX or CSV), see the dry run with every bad row (row, column, value,
reason; downloadable), then commit all rows or none; export the inventory in the import format.

fleet/services/imports.py is the use case, as for `POST /api/v1/imports/devices` and `labfleet import`."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter, Response
from starlette.datastructures import UploadFile

from fleet.console.app import ConsoleRoute, UserPage
from fleet.domain.permissions import Permission
from fleet.errors import ImportRejected, InvalidInput
from fleet.i18n import _
from fleet.services import asset_labels, imports
from fleet.services.common import require

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/deliveries")
async def form(page: UserPage) -> Response:
    require(page.principal, Permission.MANAGE_DEVICES)
    return page.render("deliveries.html", nav="deliveries", stage="upload", errors={})


async def _upload(page: UserPage) -> tuple[bytes | None, str, dict[str, str]]:
    """The file's bytes and name: from the upload, or (on commit) from the preview's hidden copy."""
    upload = page.form.get("file")
    if isinstance(upload, UploadFile) and upload.filename:
        return await upload.read(), upload.filename[:200], {}
    if page.field("content"):
        try:
            return base64.b64decode(page.field("content"), validate=True), page.field("filename")[:200], {}
        except (binascii.Error, ValueError):
            pass
    return None, "", {"file": _("Choose a file.")}


def _rejected(page: UserPage, err: ImportRejected) -> Response:
    details: list[dict[str, Any]] = [d for d in (err.details or []) if isinstance(d, dict)]
    return page.render(
        "deliveries.html",
        status=422,
        nav="deliveries",
        stage="rejected",
        message=err.message,
        bad=details,
        bad_rows=len({d.get("row") for d in details}),
        bad_csv=base64.b64encode(imports.errors_csv(details)).decode(),
        errors={},
    )


@router.post("/deliveries/preview")
async def preview(page: UserPage) -> Response:
    require(page.principal, Permission.MANAGE_DEVICES)
    data, name, errors = await _upload(page)
    if data is None:
        return page.render("deliveries.html", status=422, nav="deliveries", stage="upload", errors=errors)
    try:
        checked = await imports.preview_devices(
            page.db, page.principal, page.state.clock, data, filename=name
        )
    except InvalidInput as err:
        await page.rollback()
        return page.render(
            "deliveries.html", status=422, nav="deliveries", stage="upload", errors={"file": err.message}
        )
    if not checked.ok:
        return _rejected(page, imports.rejected(checked))
    return page.render(
        "deliveries.html",
        nav="deliveries",
        stage="preview",
        result=imports.ImportResult("devices", checked.total, True),
        content=base64.b64encode(data).decode(),
        filename=name,
        errors={},
    )


@router.post("/deliveries/commit")
async def commit(page: UserPage) -> Response:
    require(page.principal, Permission.MANAGE_DEVICES)
    data, name, errors = await _upload(page)
    if data is None:
        return page.render("deliveries.html", status=422, nav="deliveries", stage="upload", errors=errors)
    try:
        result = await imports.import_devices(page.db, page.principal, page.state.clock, data, filename=name)
    except (ImportRejected, InvalidInput):
        await page.rollback()
        return page.render(
            "deliveries.html",
            status=409,
            nav="deliveries",
            stage="upload",
            errors={"file": _("The file no longer passes the checks; preview it again.")},
        )
    delivery = await asset_labels.newest_delivery(page.db, page.principal)  # for "Print labels"
    return page.render(
        "deliveries.html", nav="deliveries", stage="done", result=result, delivery=delivery, errors={}
    )


@router.get("/deliveries/export.{fmt}")
async def export(page: UserPage, fmt: str, school: str = "") -> Response:
    body = await imports.export_devices(
        page.db,
        page.principal,
        school_id=int(school) if school.isdigit() and len(school) <= 10 else None,
        fmt=fmt,
        bom=True,  # Excel on Chinese Windows reads UTF-8 CSV right only with the BOM
    )
    media = (
        "text/csv; charset=utf-8"
        if fmt == "csv"
        else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="devices.{fmt}"', "Cache-Control": "no-store"},
    )
