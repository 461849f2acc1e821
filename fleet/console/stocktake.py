"""Room stocktake on a phone: pick a room, scan labels with the camera (vendored jsQR, static/stocktake.js)
or type tags, watch found / missing / belongs-elsewhere update in place (htmx), settle differences, finish.

fleet/services/stocktake.py is the use case, as for `/api/v1/stocktakes`. Without JavaScript the typed form
and every button still work as plain forms.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from fleet.console.app import ConsoleRoute, Page, UserPage, invalid_fields
from fleet.console.choices import choices
from fleet.domain.permissions import Permission
from fleet.domain.stocktake import LineStatus, Resolution, WindowChoice
from fleet.errors import Conflict, InvalidInput, NotFound
from fleet.i18n import _
from fleet.services import stocktake
from fleet.services.common import require

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
ACTIONS = {"move-here": Resolution.MOVED_HERE, "mark-lost": Resolution.MARKED_LOST}
WINDOWS = [w.value for w in WindowChoice]


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) <= 10 else None


def _scan_message(result: stocktake.ScanResult) -> str:
    return {
        "found": _("{tag}: found here.", tag=result.asset_tag),
        "already": _("{tag} was already counted.", tag=result.asset_tag),
        "unexpected": _("{tag} belongs to another room.", tag=result.asset_tag),
    }.get(result.outcome, _("{tag}: counted.", tag=result.asset_tag))


@router.get("/stocktake")
async def rooms(page: UserPage, school: str = "") -> Response:
    require(page.principal, Permission.MANAGE_DEVICES)
    opts = await choices(page)
    school_id = _int(school)
    listed = [r for r in opts.rooms if school_id is None or r.school_id == school_id]
    schools = {s.id: s for s in opts.schools}
    counts = await stocktake.recent(page.db, page.principal)
    return page.render(
        "stocktake.html",
        nav="stocktake",
        rooms=listed,
        schools=schools,
        counts=counts,
        windows=WINDOWS,
        WindowChoice=WindowChoice,
        errors={},
    )


@router.post("/stocktake")
async def begin(page: UserPage) -> Response:
    room_id = _int(page.field("room"))
    choice = page.field("window") or WindowChoice.TODAY.value
    errors: dict[str, str] = {}
    if room_id is None:
        errors["room"] = _("Choose a room.")
    if choice not in WINDOWS:
        errors["window"] = _("Choose a window.")
    if not errors:
        assert room_id is not None
        st = await stocktake.start(page.db, page.principal, page.state.clock, room_id, WindowChoice(choice))
        return page.redirect(f"/stocktake/{st.id}")
    require(page.principal, Permission.MANAGE_DEVICES)
    opts = await choices(page)
    return page.render(
        "stocktake.html",
        status=422,
        nav="stocktake",
        rooms=opts.rooms,
        schools={s.id: s for s in opts.schools},
        counts=await stocktake.recent(page.db, page.principal),
        windows=WINDOWS,
        WindowChoice=WindowChoice,
        errors=errors,
    )


async def _count_page(page: Page, stocktake_id: int, status: int = 200, **extra: Any) -> Response:
    count = await stocktake.view(page.db, page.principal, stocktake_id)
    fragment = bool(page.request.headers.get("hx-request"))
    values: dict[str, Any] = {
        "count": count,
        "LineStatus": LineStatus,
        "Resolution": Resolution,
        "last": None,
        "can_count": page.can(Permission.MANAGE_DEVICES) and not count.finished,
        "errors": {},
        "message": None,
        "code": "",
    }
    values.update(extra)
    if fragment:
        # htmx swaps only 2xx answers: a refused code is shown beside the field in a 200 fragment.
        return page.render("stocktake_count.html", **values)
    return page.render("stocktake_page.html", status=status, nav="stocktake", **values)


@router.get("/stocktake/{stocktake_id}")
async def count_page(page: UserPage, stocktake_id: int, done: str = "") -> Response:
    messages = {"finished": _("The count is finished and recorded in the audit log.")}
    return await _count_page(page, stocktake_id, message=messages.get(done))


@router.post("/stocktake/{stocktake_id}/scan")
async def scan(page: UserPage, stocktake_id: int) -> Response:
    code = page.field("code")[:300]
    try:
        result = await stocktake.scan(page.db, page.principal, page.state.clock, stocktake_id, code)
    except InvalidInput as err:
        await page.rollback()
        reason = {
            "ambiguous": _(
                "More than one device has this serial number: scan the label or type the asset tag."
            ),
        }.get(
            invalid_fields(err).get("code", ""), _("No device with this label, asset tag or serial number.")
        )
        return await _count_page(page, stocktake_id, status=422, errors={"code": reason}, code=code)
    except Conflict:
        await page.rollback()
        finished = (await stocktake.view(page.db, page.principal, stocktake_id)).finished
        reason = (
            _("This count is finished; start a new one.")
            if finished
            else _("Another scan counted this device just now.")
        )
        return await _count_page(page, stocktake_id, status=409, errors={"code": reason})
    return await _count_page(page, stocktake_id, message=_scan_message(result), last=result.device_id)


@router.post("/stocktake/{stocktake_id}/devices/{device_id}/{action}")
async def settle(page: UserPage, stocktake_id: int, device_id: int, action: str) -> Response:
    if action not in ACTIONS:
        raise NotFound(f"no action {action[:40]!r}")
    reason = page.field("reason")[: stocktake.MAX_REASON]
    errors: dict[str, str] = {}
    try:
        await stocktake.resolve(
            page.db, page.principal, page.state.clock, stocktake_id, device_id, ACTIONS[action], reason
        )
    except InvalidInput:
        await page.rollback()
        errors = {f"reason-{device_id}": _("Say why (it goes into the device's history).")}
    except Conflict:
        await page.rollback()
        errors = {f"reason-{device_id}": _("This device cannot be changed that way now.")}
    if errors:
        return await _count_page(page, stocktake_id, status=422, errors=errors)
    message = _("Moved to this room.") if ACTIONS[action] is Resolution.MOVED_HERE else _("Marked lost.")
    return await _count_page(page, stocktake_id, message=message)


@router.post("/stocktake/{stocktake_id}/finish")
async def finish(page: UserPage, stocktake_id: int) -> Response:
    try:
        await stocktake.finish(page.db, page.principal, page.state.clock, stocktake_id)
    except Conflict:
        await page.rollback()
    return page.redirect(f"/stocktake/{stocktake_id}?done=finished")
