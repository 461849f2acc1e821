"""Upgrades with data: for EVERY revision, a database migrated to it gets a row in each of its tables, is
upgraded to head with every row still there, then downgraded back to that revision with the rows of its
tables still there. On SQLite and PostgreSQL. The rows are made from the reflected schema at that revision
(a value of each column's type, foreign keys pointing at the parent's row), so a new migration is covered
without editing this test."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, Integer, MetaData, func, select, text

from fleet.persistence.db import alembic_config, create_engine
from fleet.persistence.schema import metadata
from tests.conftest import off_loop


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def sample(col: Column[Any]) -> Any:
    try:
        kind = col.type.python_type
    except NotImplementedError:
        return "x"
    values: dict[type, Any] = {
        bool: False,
        int: 1,
        float: 1.0,
        Decimal: Decimal("1.00"),
        datetime: datetime(2026, 1, 5, 8, 0, tzinfo=UTC),
        date: date(2026, 1, 5),
        time: time(8, 0),
        dict: {},
        list: [],
        bytes: b"x",
    }
    if kind is str:
        length = getattr(col.type, "length", None) or 8
        return "x1"[:length]
    return values.get(kind, "x")


def fill(conn: Connection) -> dict[str, int]:
    """One row in every table that has none; returns the row count of every table."""
    md = MetaData()
    md.reflect(conn)
    parents: dict[str, dict[str, Any]] = {}
    for table in md.sorted_tables:
        if table.name == "alembic_version":
            continue
        if not conn.execute(select(func.count()).select_from(table)).scalar():
            values: dict[str, Any] = {}
            pk = list(table.primary_key.columns)
            for col in table.columns:
                fk = next(iter(col.foreign_keys), None)
                if fk is not None:
                    parent = parents.get(fk.column.table.name)
                    values[col.name] = parent[fk.column.name] if parent else None
                elif len(pk) == 1 and col is pk[0] and isinstance(col.type, Integer):
                    continue  # the database numbers it
                else:
                    values[col.name] = sample(col)
            conn.execute(table.insert().values(**values))
        parents[table.name] = dict(conn.execute(select(table).limit(1)).mappings().one())
    return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in md.sorted_tables}


async def run_sync(url: str, fn: Any) -> Any:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def counts(conn: Connection) -> dict[str, int]:
    md = MetaData()
    md.reflect(conn)
    return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in md.sorted_tables}


async def migrate(url: str, revision: str, *, down: bool = False) -> None:
    step = command.downgrade if down else command.upgrade
    await asyncio.to_thread(off_loop, lambda: step(alembic_config(url), revision))


async def check_every_revision(url: str, reset: Any) -> None:
    revs = revisions()
    assert len(revs) >= 12 and revs[0] == "0001"
    for rev in revs:
        await reset()
        await migrate(url, rev)
        filled = await run_sync(url, fill)
        assert all(filled.values()), (rev, filled)
        if rev == revs[-1]:
            assert set(metadata.tables) <= set(filled)  # at head, every model's table got a row
        await migrate(url, "head")
        after = await run_sync(url, counts)
        lost = {t: (n, after.get(t)) for t, n in filled.items() if t in after and after[t] < n}
        assert not lost, f"upgrading from {rev} with data lost rows: {lost}"
        await migrate(url, rev, down=True)
        back = await run_sync(url, counts)
        lost = {t: (n, back.get(t)) for t, n in filled.items() if back.get(t, 0) < n}
        assert not lost, f"downgrading head -> {rev} lost rows of {rev}'s tables: {lost}"


async def test_upgrade_from_every_revision_with_data_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'up.db'}"

    async def reset() -> None:
        for p in tmp_path.glob("up.db*"):
            p.unlink()

    await check_every_revision(url, reset)


async def test_upgrade_from_every_revision_with_data_on_postgres(postgres_migrated: str) -> None:
    url = postgres_migrated

    async def reset() -> None:
        def drop(conn: Connection) -> None:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))

        await run_sync(url, drop)

    try:
        await check_every_revision(url, reset)
    finally:  # leave the session's database as the other tests expect it: at head, empty
        await reset()
        await migrate(url, "head")


pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")
