"""Migrations run clean on SQLite and PostgreSQL, and agree with the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from fleet.persistence.db import create_engine, upgrade
from fleet.persistence.schema import metadata


async def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:

            def compare(sync_conn):
                ctx = MigrationContext.configure(
                    sync_conn,
                    opts={"compare_type": True, "render_as_batch": sync_conn.dialect.name == "sqlite"},
                )
                return compare_metadata(ctx, metadata)

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


async def test_models_and_migrations_agree(any_db_url: str) -> None:
    diff = await _diff(any_db_url)
    assert diff == [], f"models and migrations differ; write a migration: {diff}"


async def test_upgrade_from_empty_creates_every_table(tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/fresh.db"
    await upgrade(url)
    await upgrade(url)  # idempotent: a second upgrade is a no-op
    engine = create_engine(url)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    assert set(metadata.tables) <= tables
    assert "alembic_version" in tables
