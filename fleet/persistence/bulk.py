"""Bulk writes and lookups for imports: an executemany whose values are bound once per distinct value, and
membership in a long list of values as one bound parameter."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import ARRAY, Column, ColumnElement, Table, any_, bindparam, func, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession


def dialect_of(session: AsyncSession) -> Dialect:
    return session.get_bind().dialect


async def insert_rows(
    session: AsyncSession, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """INSERT the rows (tuples in `columns` order) with one executemany.

    The same as `session.execute(insert(table), dicts)`, without SQLAlchemy's per-row, per-value
    parameter processing (a third of a 10,000-row import's time): each column's bind processor (the
    UTC check, SQLite's date and decimal strings) runs once per distinct value, since a delivery repeats
    its dates, prices and timestamps on every row."""
    if not rows:
        return
    conn = await session.connection()
    dialect = conn.dialect
    compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
    order = compiled.positiontup
    if order is None or sorted(order) != sorted(columns):
        # A named paramstyle (or a statement with defaults of its own): let SQLAlchemy bind each row.
        await session.execute(insert(table), [dict(zip(columns, r, strict=True)) for r in rows])
        return
    at = [list(columns).index(name) for name in order]
    converters = [_memo(table.c[name], dialect) for name in order]
    plain = all(c is None for c in converters)
    params: list[tuple[Any, ...]] = []
    if plain:
        params = [tuple([r[i] for i in at]) for r in rows]
    else:
        pairs = list(zip(at, converters, strict=True))
        params = [tuple([r[i] if c is None else c(r[i]) for i, c in pairs]) for r in rows]
    await conn.exec_driver_sql(compiled.string, params)


def _memo(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """The column's bind processor, remembering each value's result (None: values go as they are).

    Values equal under == with the same type are bound alike (two zones' spellings of one instant are one
    UTC instant; 1.0 and 1.00 one number), which is what the processors make of them anyway."""
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    if process is None:
        return None
    seen: dict[tuple[type, Any], Any] = {}

    def convert(value: Any) -> Any:
        key = (type(value), value)
        try:
            return seen[key]
        except KeyError:
            out = seen[key] = process(value)
            return out
        except TypeError:  # an unhashable value: processed every time
            return process(value)

    return convert


def among(column: ColumnElement[Any], values: Iterable[Any], dialect: Dialect) -> ColumnElement[bool]:
    """`column IN values` with the values as one parameter: a JSON array read by `json_each` (SQLite), an
    array (PostgreSQL). A 10,000-value IN list otherwise binds and processes 10,000 parameters."""
    listed = list(values)
    if dialect.name == "sqlite":
        each = func.json_each(bindparam(None, json.dumps(listed))).table_valued("value")
        return column.in_(select(each.c.value))
    if dialect.name == "postgresql":
        return column == any_(bindparam(None, listed, type_=ARRAY(column.type)))
    return column.in_(listed)
