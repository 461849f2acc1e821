"""Devices: search with keyset paging, the device page (identity, lifecycle buttons, state, timelines) and
commands with confirmation and their live result."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Response

from fleet.console.app import ConsoleRoute, UserPage, invalid_fields
from fleet.console.choices import choices
from fleet.domain.enums import DeviceStatus
from fleet.domain.lifecycle import TRANSITIONS
from fleet.domain.permissions import Permission
from fleet.errors import Conflict, IllegalTransition, InvalidInput
from fleet.i18n import _
from fleet.i18n.labels import label
from fleet.services import commands, device_overview
from fleet.services.inventory import DeviceService

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
STATUSES = [s.value for s in DeviceStatus]
# The commands the device page offers (a firmware `update` is a rollout's, not a button's).
CONSOLE_COMMANDS = ("lock", "unlock", "reboot", "diagnostics", "set_policy")


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) <= 10 else None


@router.get("/devices")
async def devices(
    page: UserPage,
    q: str = "",
    school: str = "",
    room: str = "",
    status: str = "",
    online: str = "",
    cursor: str | None = None,
) -> Response:
    filters = {"q": q[:120], "school": school, "room": room, "status": status, "online": online}
    result = await device_overview.search(
        page.db,
        page.principal,
        text=q or None,
        school_id=_int(school),
        room_id=_int(room),
        status=status if status in STATUSES else None,
        online={"yes": True, "no": False}.get(online),
        cursor=cursor,
    )
    opts = await choices(page)
    # The room list is filtered here, not in the template: a district has 550 rooms, and a Jinja filter per
    # option was most of the page's render time at 10,000 devices (benchmarks/console.py).
    school_id = _int(school)
    rooms = [r for r in opts.rooms if school_id is None or r.school_id == school_id]
    query = "&".join(f"{k}={v}" for k, v in filters.items() if v)
    template = "devices_rows.html" if page.request.headers.get("hx-request") else "devices.html"
    return page.render(
        template,
        nav="devices",
        result=result,
        filters=filters,
        opts=opts,
        rooms=rooms,
        room_id=_int(room),
        statuses=STATUSES,
        next_url=f"/devices?{query}&cursor={result.next_cursor}" if result.next_cursor else None,
        label_query=urlencode({k: v for k, v in filters.items() if v}),
    )


async def _device_page(page: Any, device_id: int, **extra: Any) -> Response:
    detail = await device_overview.detail(page.db, page.principal, page.state.clock, device_id)
    current = DeviceStatus(detail.device.status)
    return page.render(
        "device.html",
        nav="devices",
        d=detail,
        transitions=sorted(TRANSITIONS[current]) if page.can(Permission.MANAGE_DEVICES) else [],
        command_names=CONSOLE_COMMANDS if page.can(Permission.SEND_COMMANDS) else (),
        tz=detail.school.timezone,
        **({"errors": {}, "batch": (page.request.query_params.get("batch") or "")[:64] or None} | extra),
    )


@router.get("/devices/{device_id}")
async def device(page: UserPage, device_id: int) -> Response:
    return await _device_page(page, device_id)


@router.post("/devices/{device_id}/transition")
async def transition(page: UserPage, device_id: int) -> Response:
    target = page.field("target")
    reason = page.field("reason")[:500] or None
    if target not in STATUSES:
        return await _device_page(page, device_id, errors={"target": _("Choose a status.")})
    svc = DeviceService(page.db, page.principal, page.state.clock)
    try:
        await svc.transition(device_id, DeviceStatus(target), reason)
    except IllegalTransition:
        return await _device_page(
            page, device_id, errors={"target": _("That change is not allowed from the current status.")}
        )
    return page.redirect(f"/devices/{device_id}?done=transition")


@router.post("/devices/{device_id}/commands")
async def send_command(page: UserPage, device_id: int) -> Response:
    name = page.field("name")
    args: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if name == "set_policy":
        for key in ("session_minutes", "daily_minutes", "break_minutes"):
            value = page.field(key)
            if value:
                if not value.isdigit():
                    errors[key] = _("A whole number of minutes.")
                else:
                    args[key] = int(value)
    elif name == "lock" and page.field("message"):
        args["message"] = page.field("message")[:128]
    if name not in CONSOLE_COMMANDS:
        errors["args"] = _("Choose a command.")
    if not errors:
        try:
            commands.validate_args(name, args)
        except InvalidInput as err:
            errors["args"] = _("Not accepted: {reason}", reason=err.message)
    if errors:
        return await _device_page(page, device_id, errors=errors)
    try:
        spec = commands.CommandSpec(
            "device", device_id, name, args, commands.DEFAULT_TTL, commands.DEFAULT_TIMEOUT_S
        )
        sent = await commands.send(page.db, page.principal, page.state.clock, spec, page.state.plane)
    except InvalidInput as err:
        return await _device_page(page, device_id, errors=invalid_fields(err) or {"name": err.message})
    except Conflict:
        # The device never enrolled: there is nobody to send it to (the reason beside the form).
        await page.rollback()
        return await _device_page(
            page,
            device_id,
            errors={"args": _("This device has not enrolled yet, so it cannot receive commands.")},
        )
    # The request's commit wakes the dispatcher (commands.send asked for it after the commit).
    return page.redirect(f"/devices/{device_id}?batch={sent['batch_id']}#command-result")


@router.get("/commands/{batch_id}")
async def command_result(page: UserPage, batch_id: str) -> Response:
    """The result of a command batch; the device page polls this fragment until the command is final."""
    progress = await commands.batch_progress(page.db, page.principal, batch_id[:64])
    cmds = progress["commands"]
    final = all(c.status in commands.FINAL for c in cmds)
    return page.render("command_result.html", progress=progress, final=final, name=label(progress["name"]))
