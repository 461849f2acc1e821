"""Alerts: filter by school, room, status and severity; acknowledge and resolve; the list refreshes live."""

from __future__ import annotations

from fastapi import APIRouter, Response

from fleet.console.app import ConsoleRoute, UserPage
from fleet.console.choices import choices
from fleet.domain.permissions import Permission
from fleet.services import alerts as alert_service

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
STATUSES = ("active", "open", "acknowledged", "resolved")
SEVERITIES = ("critical", "warning", "info")


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) <= 10 else None


@router.get("/alerts")
async def alerts(
    page: UserPage, school: str = "", room: str = "", status: str = "active", severity: str = ""
) -> Response:
    rows = await alert_service.list_alerts(
        page.db,
        page.principal,
        school_id=_int(school),
        room_id=_int(room),
        status=status if status in STATUSES else None,  # type: ignore[arg-type]  # one of the four above
        severity=severity if severity in SEVERITIES else None,
        limit=alert_service.MAX_LIST,
    )
    opts = await choices(page, models=False)
    schools = {s.id: s for s in opts.schools}
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
    act_on = alert_service.acknowledge if action == "ack" else alert_service.resolve
    await act_on(page.db, page.principal, page.state.clock, alert_id)
    back = page.field("back")
    return page.redirect("/alerts" + (f"?{back}" if back and "//" not in back else ""))
