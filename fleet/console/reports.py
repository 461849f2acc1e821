"""Reports: pick a report and its filters, preview it in the page (its HTML rendering), download any format.
Same service as `GET /api/v1/reports/{name}` (fleet/services/reports)."""

from __future__ import annotations

import asyncio
from datetime import date

from fastapi import APIRouter, Response

from fleet.console.app import ConsoleRoute, UserPage
from fleet.console.choices import choices
from fleet.domain.permissions import Permission
from fleet.errors import InvalidInput
from fleet.services.common import require
from fleet.services.reports import FORMATS, MEDIA_TYPES, ReportQuery, available, check_name, generate, render
from fleet.services.reports.render import filename

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _query(school: str, start: str, end: str) -> ReportQuery:
    return ReportQuery(
        school=int(school) if school.isdigit() and len(school) <= 10 else None,
        district=None,
        start=_day(start),
        end=_day(end),
        budget=None,
    )


@router.get("/reports")
async def reports(
    page: UserPage, name: str = "", school: str = "", start: str = "", end: str = ""
) -> Response:
    require(page.principal, Permission.READ_REPORTS)
    opts = await choices(page)
    runnable = available(page.principal)
    if name not in {k for k, _t in runnable}:
        name = ""  # a report this caller may not run (or no such report) is not offered
    filters = {"name": name, "school": school, "start": start, "end": end}
    errors: dict[str, str] = {}
    if start and _day(start) is None:
        errors["start"] = "YYYY-MM-DD"
    if end and _day(end) is None:
        errors["end"] = "YYYY-MM-DD"
    query = "&".join(f"{k}={v}" for k, v in filters.items() if v and k != "name")
    return page.render(
        "reports.html",
        nav="reports",
        reports=runnable,
        formats=FORMATS,
        opts=opts,
        filters=filters,
        errors=errors,
        query=query,
    )


@router.get("/reports/{name}/file")
async def report_file(
    page: UserPage, name: str, format: str = "html", school: str = "", start: str = "", end: str = ""
) -> Response:
    require(page.principal, Permission.READ_REPORTS)
    check_name(name[:64])
    if format not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}")
    report = await generate(
        page.db,
        page.principal,
        name,
        _query(school, start, end),
        settings=page.state.settings.reports,
        now=page.now,
    )
    body = await asyncio.to_thread(render, report, format, section=None)
    headers = {"Cache-Control": "no-store"}
    if format != "html":
        headers["Content-Disposition"] = f'attachment; filename="{filename(report, format)}"'
    return Response(body, media_type=MEDIA_TYPES[format], headers=headers)
