"""Procurement and operations reports: inventory, lifecycle, health, alerts and usage joined up.

`generate` builds a Report (typed sections) for the caller's schools; `render` turns it into JSON, CSV, XLSX,
HTML or PDF.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.permissions import Permission, Principal
from fleet.errors import NotFound
from fleet.services.common import require
from fleet.services.reports import (
    budget,
    coverage,
    inspection,
    inventory,
    reliability,
    screentime,
    stocktake,
    utilisation,
    warranty,
)
from fleet.services.reports.data import Context, ReportQuery, resolve_scope
from fleet.services.reports.model import Progress, Report
from fleet.services.reports.render import FORMATS, MEDIA_TYPES, render
from fleet.settings import ReportSettings

log = logging.getLogger(__name__)

Builder = Callable[[Context], Awaitable[Report]]

REPORTS: dict[str, tuple[str, Builder]] = {
    "coverage": (coverage.TITLE, coverage.build),
    "inventory": (inventory.TITLE, inventory.build),
    "reliability": (reliability.TITLE, reliability.build),
    "warranty": (warranty.TITLE, warranty.build),
    "utilisation": (utilisation.TITLE, utilisation.build),
    "budget": (budget.TITLE, budget.build),
    "inspection": (inspection.TITLE, inspection.build),
    "screentime": (screentime.TITLE, screentime.build),
    "stocktake": (stocktake.TITLE, stocktake.build),
}
# Reports that need more than READ_REPORTS: the security inspection lists who holds access and reads the
# audit chain, so only administrators and auditors may run it.
REQUIRES: dict[str, Permission] = {"inspection": Permission.INSPECT_SECURITY}

__all__ = [
    "FORMATS",
    "MEDIA_TYPES",
    "REPORTS",
    "Report",
    "ReportQuery",
    "available",
    "check_name",
    "generate",
    "render",
]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


def check_name(name: str) -> Builder:
    if name not in REPORTS:
        raise NotFound(
            f"no report named {name!r}; reports: {', '.join(REPORTS)}", details={"reports": list(REPORTS)}
        )
    return REPORTS[name][1]


def available(principal: Principal) -> list[tuple[str, str]]:
    """(name, title) of the reports this caller may generate, in the registry's order."""
    require(principal, Permission.READ_REPORTS)
    return [(k, t) for k, (t, _b) in REPORTS.items() if k not in REQUIRES or principal.has(REQUIRES[k])]


async def generate(
    session: AsyncSession,
    principal: Principal,
    name: str,
    query: ReportQuery,
    *,
    settings: ReportSettings,
    now: datetime,
    progress: Progress | None = None,
) -> Report:
    """Build one report over the caller's schools, narrowed by the query's school, district and dates."""
    require(principal, Permission.READ_REPORTS)
    build = check_name(name)
    if name in REQUIRES:
        require(principal, REQUIRES[name])
    scope = await resolve_scope(session, principal, query, now.date())
    ctx = Context(
        session=session,
        scope=scope,
        settings=settings,
        now=now,
        query=query,
        progress=progress or _no_progress,
        principal=principal,
    )
    report = await build(ctx)
    log.info(
        "report %s generated for %s (%s..%s, %d schools)",
        name,
        principal.actor,
        scope.start,
        scope.end,
        len(scope.schools),
    )
    return report
