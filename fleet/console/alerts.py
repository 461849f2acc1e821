"""Alerts: filter by school, room, status and severity; acknowledge and resolve; the list refreshes live."""

from __future__ import annotations

from fastapi import APIRouter, Response

from fleet.console.app import ConsoleRoute, UserPage
from fleet.domain.permissions import Permission
from fleet.services import console_plane

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
STATUSES = ("active", "open", "acknowledged", "resolved")
SEVERITIES = ("critical", "warning", "info")


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) <= 10 else None


@router.get("/alerts")
async def alerts(
    page: UserPage, school: str = "", room: str = "", status: str = "active", severity: str = ""
) -> Response:
    rows = await console_plane.list_alerts(
        page.db,
        page.principal,
        school_id=_int(school),
        room_id=_int(room),
        status=status if status in STATUSES else None,
        severity=severity if severity in SEVERITIES else None,
    )
    opts = await console_plane.choices(page.db, page.principal)
    schools = {s.id: s for s in opts["schools"]}
    filters = {"school": school, "room": room, "status": status, "severity": severity}
    template = "alerts_rows.html" if page.request.headers.get("hx-request") else "alerts.html"
    return page.render(
        template,
        nav="alerts",
        rows=rows,
        schools=schools,
        opts=opts,
        filters=filters,
        statuses=STATUSES,
        severities=SEVERITIES,
        may_manage=page.can(Permission.MANAGE_ALERTS),
        query="&".join(f"{k}={v}" for k, v in filters.items() if v),
    )


@router.post("/alerts/{alert_id}/{action}")
async def act(page: UserPage, alert_id: int, action: str) -> Response:
    await console_plane.alert_action(
        page.db, page.principal, alert_id, "ack" if action == "ack" else "resolve", page.now
    )
    back = page.field("back")
    return page.redirect("/alerts" + (f"?{back}" if back and "//" not in back else ""))
