"""Liveness and readiness probes (no token, outside /api/v1)."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from fleet.api.deps import State
from fleet.services.health import database_problem

router = APIRouter()


@router.get("/healthz", tags=["health"], summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], summary="Readiness: the database answers")
async def readyz(state: State) -> Any:
    problem = await database_problem(state.engine)
    if problem is not None:
        return JSONResponse({"status": "unavailable", "database": problem}, status_code=503)
    return {"status": "ok", "database": "ok"}
