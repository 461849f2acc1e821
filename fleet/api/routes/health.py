"""Liveness and readiness probes (no token, outside /api/v1)."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from fleet.api.deps import State
from fleet.services import tls
from fleet.services.health import database_problem, plane_readiness

router = APIRouter()


@router.get("/healthz", tags=["health"], summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["health"],
    summary="Readiness: the database answers, the broker is linked, ingest keeps up; warnings name "
    "certificates that expire within 30 days",
)
async def readyz(state: State) -> Any:
    problem = await database_problem(state.engine)
    if problem is not None:
        return JSONResponse({"status": "unavailable", "database": problem}, status_code=503)
    plane = state.plane
    plane_fields, problems = plane_readiness(
        plane.broker_links() if plane is not None else None,
        plane.ingest.lag_seconds() if plane is not None and plane.ingest is not None else None,
        state.settings.mqtt.ready_max_ingest_lag_s,
    )
    if problems:
        body = {"status": "unavailable", "database": "ok", **plane_fields, "problems": problems}
        return JSONResponse(body, status_code=503)
    # An expiring certificate is a warning, not unreadiness: the service still serves until the day itself.
    warnings = [
        {
            "code": "certificate_expiring",
            "certificate": e.role,
            "not_after": e.not_after.isoformat(),
            "days_left": e.days_left,
            "action": "labfleet tls renew" + (" --ca" if e.role == "ca" else ""),
        }
        for e in await tls.expiry_warnings(state.settings, state.clock.now())
    ]
    return {"status": "ok", "database": "ok", **plane_fields, "warnings": warnings}
