"""Liveness and readiness: is the database answering."""

from __future__ import annotations

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
