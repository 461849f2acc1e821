"""Procurement and operations reports: GET /api/v1/reports/{name}?format=json|csv|xlsx|html|pdf."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from fleet.api import schemas as s
from fleet.api.deps import Caller, Session, State
from fleet.domain.permissions import Permission
from fleet.errors import InvalidInput
from fleet.i18n import negotiate, use_locale
from fleet.services.common import require
from fleet.services.reports import (
    FORMATS,
    MEDIA_TYPES,
    REPORTS,
    ReportQuery,
    available,
    check_name,
    generate,
    render,
)
from fleet.services.reports.render import filename

router = APIRouter(prefix="/api/v1")
FilterId = Annotated[int | None, Query(ge=1, le=2**31 - 1)]


@router.get("/reports", tags=["reports"], summary="The reports there are, and their formats")
async def list_reports(caller: Caller) -> Any:
    return {"reports": [{"name": k, "title": t} for k, t in available(caller)], "formats": list(FORMATS)}


@router.get(
    "/reports/{name}",
    tags=["reports"],
    response_class=Response,
    summary="One report over your schools, filtered by school or district and a date range",
    description="Reports: " + ", ".join(REPORTS) + ". Formats: " + ", ".join(FORMATS) + " (pdf needs the "
    "`reports` extra). Dates are inclusive and in UTC; without them a report covers the year up to today. "
    "`section` narrows json and csv to one table; `budget` is the yearly equipment budget the budget "
    "report measures the AI share against.",
)
async def get_report(
    request: Request,
    session: Session,
    caller: Caller,
    state: State,
    name: Annotated[str, Path(max_length=64)],
    format: Annotated[str, Query(max_length=16, description=" | ".join(FORMATS))] = "json",
    school: FilterId = None,
    district: FilterId = None,
    start: s.Day | None = None,
    end: s.Day | None = None,
    section: Annotated[str | None, Query(max_length=64)] = None,
    budget: Annotated[s.Money | None, Query()] = None,
    lang: Annotated[
        str | None, Query(max_length=20, description="zh-CN or en (default: Accept-Language)")
    ] = None,
    bom: Annotated[bool | None, Query(description="csv: UTF-8 BOM for Excel (default: on in zh-CN)")] = None,
) -> Response:
    require(caller, Permission.READ_REPORTS)
    check_name(name)
    if format not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", details={"formats": list(FORMATS)})
    loc = negotiate(
        user=lang, accept_language=request.headers.get("accept-language"), default=state.settings.locale
    )
    with use_locale(loc):
        report = await generate(
            session,
            caller,
            name,
            ReportQuery(school=school, district=district, start=start, end=end, budget=budget),
            settings=state.settings.reports,
            now=state.clock.now(),
        )
        # Rendering XLSX or PDF is CPU work: off the event loop so other requests keep being answered (the
        # thread runs in a copy of this context, so in the same language).
        body = await asyncio.to_thread(render, report, format, section=section, bom=bom)
    headers = (
        {}
        if format in ("json", "html")
        else {"Content-Disposition": f'attachment; filename="{filename(report, format)}"'}
    )
    return Response(body, media_type=MEDIA_TYPES[format], headers=headers)
