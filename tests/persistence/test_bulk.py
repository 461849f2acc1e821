"""The import's bulk writes and lookups store and find exactly what SQLAlchemy's own paths do, on SQLite and
PostgreSQL: `insert_rows` binds each distinct value once instead of once per row, `among` sends a long list
as one parameter."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, select, text

from fleet.domain.clock import FakeClock
from fleet.domain.enums import DeviceStatus, Ownership
from fleet.domain.permissions import SYSTEM
from fleet.persistence.bulk import among, dialect_of, insert_rows
from fleet.persistence.db import create_engine, session_factory, unit_of_work
from fleet.persistence.models import Device
from fleet.services.inventory import DeviceModelService, DistrictService, SchoolService

COLUMNS = (
    "vendor",
    "serial_number",
    "asset_tag",
    "model_id",
    "school_id",
    "room_id",
    "status",
    "order_number",
    "purchase_date",
    "unit_cost",
    "funding_source",
    "ownership",
    "created_at",
    "updated_at",
)
# What the database holds, as text, so a value SQLAlchemy would have stored differently (a date, a
# decimal, a timestamp in another zone or format) shows.
STORED = (
    "SELECT asset_tag, status, CAST(purchase_date AS TEXT), CAST(unit_cost AS TEXT), "
    "CAST(created_at AS TEXT), ownership, order_number, room_id "
    "FROM devices WHERE asset_tag LIKE :prefix ORDER BY asset_tag"
)


async def _world(url: str) -> tuple[int, int]:
    """(model id, school id)."""
    engine = create_engine(url)
    clock = FakeClock()
    async with unit_of_work(session_factory(engine)) as s:
        d = await DistrictService(s, SYSTEM, clock).create({"name": "Bulk"})
        school = await SchoolService(s, SYSTEM, clock).create(
            {"district_id": d.id, "code": "bulk-a", "name": "A", "uplink_mbps": 100, "timezone": "UTC"}
        )
        model = await DeviceModelService(s, SYSTEM, clock).create(
            {
                "vendor": "EduTech",
                "model_number": "LT-100",
                "kind": "terminal",
                "transport": "mqtt",
                "unit_price": Decimal("329.00"),
                "warranty_months": 36,
                "supplier": "S",
                "profile_key": None,
            }
        )
        ids = (model.id, school.id)
    await engine.dispose()
    return ids


def _rows(prefix: str, model_id: int, school_id: int) -> list[tuple[Any, ...]]:
    beijing = timezone(timedelta(hours=8))
    at = datetime(2026, 9, 1, 16, 30, 15, 123456, tzinfo=beijing)  # stored as 08:30:15 UTC
    out = []
    for i, (day, cost, status, own) in enumerate(
        [
            (date(2025, 9, 1), Decimal("1299.50"), DeviceStatus.RECEIVED, Ownership.OWNED),
            (date(2025, 9, 1), Decimal("1299.50"), DeviceStatus.RECEIVED, Ownership.LEASED),
            (None, None, DeviceStatus.RECEIVED, Ownership.OWNED),
            (date(1999, 12, 31), Decimal("0.01"), DeviceStatus.RECEIVED, Ownership.OWNED),
        ]
    ):
        out.append(
            (
                "EduTech",
                f"{prefix}SN-{i}",
                f"{prefix}{i}",
                model_id,
                school_id,
                None,
                status,
                f"PO-{i}" if i % 2 else None,
                day,
                cost,
                "grant",
                own,
                at,
                at,
            )
        )
    return out


async def test_insert_rows_stores_what_sqlalchemys_insert_stores(any_db_url: str) -> None:
    model_id, school_id = await _world(any_db_url)
    engine = create_engine(any_db_url)
    async with unit_of_work(session_factory(engine)) as s:
        await insert_rows(s, Device.__table__, COLUMNS, _rows("bulk-", model_id, school_id))
        await s.execute(
            insert(Device.__table__),
            [dict(zip(COLUMNS, r, strict=True)) for r in _rows("orm-", model_id, school_id)],
        )
    async with unit_of_work(session_factory(engine)) as s:
        ours = [tuple(r)[1:] for r in await s.execute(text(STORED), {"prefix": "bulk-%"})]
        theirs = [tuple(r)[1:] for r in await s.execute(text(STORED), {"prefix": "orm-%"})]
        read_back = (await s.execute(select(Device.created_at).where(Device.asset_tag == "bulk-0"))).scalar()
    await engine.dispose()
    assert len(ours) == 4 and ours == theirs
    assert ours[0][0] == "received" and ours[1][4] == "leased" and ours[2][1:3] == (None, None)
    assert read_back == datetime(2026, 9, 1, 8, 30, 15, 123456, tzinfo=UTC)


async def test_insert_rows_refuses_a_naive_timestamp_as_the_column_type_does(any_db_url: str) -> None:
    model_id, school_id = await _world(any_db_url)
    rows = _rows("naive-", model_id, school_id)
    rows[2] = (*rows[2][:12], datetime(2026, 9, 1, 8, 0), datetime(2026, 9, 1, 8, 0))
    engine = create_engine(any_db_url)
    with pytest.raises(ValueError, match="naive datetime"):
        async with unit_of_work(session_factory(engine)) as s:
            await insert_rows(s, Device.__table__, COLUMNS, rows)
    async with unit_of_work(session_factory(engine)) as s:
        assert (await s.execute(text("SELECT count(*) FROM devices"))).scalar() == 0
    await engine.dispose()


async def test_among_finds_values_in_a_list_longer_than_the_bound_parameter_limit(any_db_url: str) -> None:
    """40,000 candidates: more than PostgreSQL's 32,767 binds in one statement (and SQLite's default 32,766;
    Debian builds it with 250,000)."""
    model_id, school_id = await _world(any_db_url)
    engine = create_engine(any_db_url)
    async with unit_of_work(session_factory(engine)) as s:
        await insert_rows(s, Device.__table__, COLUMNS, _rows("t-", model_id, school_id))
    candidates = [f"t-{i}" for i in range(2, 40_002)] + ["it's", 'say "t-0"', "t-%"]
    async with unit_of_work(session_factory(engine)) as s:
        tags = Device.__table__.c.asset_tag
        found = (await s.execute(select(tags).where(among(tags, candidates, dialect_of(s))))).scalars()
        assert sorted(found) == ["t-2", "t-3"]
        none = (await s.execute(select(tags).where(among(tags, [], dialect_of(s))))).scalars()
        assert list(none) == []
    await engine.dispose()
