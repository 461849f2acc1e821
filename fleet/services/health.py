"""Liveness and readiness: is the database answering, is the broker linked, is ingest keeping up."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def database_problem(engine: AsyncEngine) -> str | None:
    """None when the database answers a trivial query; else the kind of failure (never its message)."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as err:  # noqa: BLE001 - any database failure means "not ready"
        return type(err).__name__
    return None


def plane_readiness(
    links: dict[str, bool] | None, lag_s: float | None, max_lag_s: float
) -> tuple[dict[str, Any], list[str]]:
    """The /readyz fields for the device plane and the problems that make the service not ready.

    `links` is None when this process runs no device plane (broker "none", or an API-only app): nothing to
    report as a problem. `lag_s` is None when ingest runs in separate workers (their own /metrics say it)."""
    if links is None:
        return {}, []
    fields: dict[str, Any] = {"broker": {name: "ok" if up else "down" for name, up in links.items()}}
    problems = [f"broker_{name}_down" for name, up in links.items() if not up]
    if lag_s is None:
        fields["ingest"] = "in_workers"
    else:
        fields["ingest_lag_s"] = round(lag_s, 3)
        if lag_s > max_lag_s:
            problems.append("ingest_lag")
    return fields, problems
