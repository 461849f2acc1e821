"""Print labels: a form over a selection (a room, a school, a delivery, a search, a typed list) with the
layout and what the QR code carries; the answer is the PDF. Reached from a room, a school, the device
search and a finished import. Same service as `POST /api/v1/labels` and `labfleet labels`
(fleet/services/asset_labels.py)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Response

from fleet.console.app import ConsoleRoute, UserPage
from fleet.console.choices import choices
from fleet.domain.asset_labels import LAYOUTS, MAX_LABELS, LabelContent
from fleet.domain.enums import DeviceStatus
from fleet.domain.permissions import Permission
from fleet.errors import InvalidInput
from fleet.i18n import N_, _
from fleet.services import asset_labels
from fleet.services.common import require

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
STATUSES = {s.value for s in DeviceStatus}
# Serial numbers or asset tags typed or pasted one per line (commas, spaces and semicolons also separate).
_LIST_SPLIT = re.compile(r"[\s,;，；]+")
# The choices' names (fleet/domain/asset_labels.py documents the sheets).
NAMES = {
    "3x8": N_("A4 sheet, 3 × 8 labels of 63.5 × 33.9 mm (L7159 size)"),
    "2x7": N_("A4 sheet, 2 × 7 labels of 99.1 × 38.1 mm (L7163 size)"),
    "roll50x30": N_("Label roll, one 50 × 30 mm label at a time"),
    "url": N_("The device's console page (a phone's camera opens it)"),
    "tag": N_("The asset tag (for a scanner that types into a form)"),
}


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() and 0 < len(value) <= 10 and int(value) < 2**31 else None


def _filters(get: Any) -> dict[str, str]:
    """The selection as the form carries it (strings, cut to size)."""
    return {
        key: (get(key) or "").strip()[:limit]
        for key, limit in (
            ("room", 10),
            ("school", 10),
            ("delivery", 10),
            ("q", 120),
            ("status", 16),
            ("online", 3),
            ("serials", 60_000),
        )
    }


def _selection(f: dict[str, str]) -> asset_labels.Selection:
    serials = tuple(s[:120] for s in _LIST_SPLIT.split(f["serials"]) if s)
    return asset_labels.Selection(
        room_id=_int(f["room"]),
        school_id=_int(f["school"]),
        delivery_id=_int(f["delivery"]),
        text=f["q"] or None,
        status=f["status"] if f["status"] in STATUSES else None,
        online={"yes": True, "no": False}.get(f["online"]),
        serials=serials,
    )


async def _form(
    page: Any, filters: dict[str, str], *, status: int = 200, errors: dict[str, str], **chosen: str
) -> Response:
    selection = _selection(filters)
    count = None
    if not errors and not selection.is_empty():
        try:
            found = await asset_labels.select_labels(
                page.db, page.principal, selection, content=LabelContent.TAG
            )
            count = len(found)
        except InvalidInput as err:
            errors = {"selection": err.message}
    opts = await choices(page, models=False)
    school_id = _int(filters["school"])
    return page.render(
        "labels.html",
        status=status,
        nav="devices",
        filters=filters,
        count=count,
        errors=errors,
        opts=opts,
        rooms=[r for r in opts.rooms if school_id is None or r.school_id == school_id],
        deliveries=await asset_labels.recent_deliveries(page.db, page.principal),
        layouts=LAYOUTS,
        contents=[c.value for c in LabelContent],
        layout=chosen.get("layout", "3x8"),
        content=chosen.get("content", LabelContent.URL.value),
        max_labels=MAX_LABELS,
        names={code: _(name) for code, name in NAMES.items()},
    )


@router.get("/labels")
async def form(page: UserPage) -> Response:
    require(page.principal, Permission.MANAGE_DEVICES)
    return await _form(page, _filters(page.request.query_params.get), errors={})


@router.post("/labels")
async def print_labels(page: UserPage) -> Response:
    require(page.principal, Permission.MANAGE_DEVICES)
    filters = _filters(page.field)
    layout, content = page.field("layout")[:16], page.field("content")[:8]
    try:
        out = await asset_labels.print_labels(
            page.db,
            page.principal,
            page.now,
            _selection(filters),
            layout=layout,
            content=content,
            base_url=str(page.request.base_url),
        )
    except InvalidInput as err:
        await page.rollback()
        fields = [d.get("field") for d in err.details or [] if isinstance(d, dict)]
        field = next((f for f in fields if f in ("layout", "content", "serials")), "selection")
        return await _form(
            page, filters, status=422, errors={field: err.message}, layout=layout, content=content
        )
    resp = Response(
        out.pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{out.filename}"'},
    )
    page.finish(resp)
    return resp
