"""The ingest writer's SQLite driver path: its statements, and the values stored as SQLAlchemy stores them.

On SQLite the hot statements (read and write 2,000 device_state rows per batch, the roll-ups, presence
transitions) go to the driver directly: SQLAlchemy's per-row parameter processing cost ~400 us a row there,
the driver ~10 us. The values are stored exactly as SQLAlchemy stores them (naive UTC datetime text, JSON
text, 0/1); tests/persistence/test_ingest_parity.py runs both paths on the same batches and compares rows.
`fleet.persistence.ingest_rows` chooses the path; the SQLAlchemy side lives there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.device_state import DeviceState

# SQLite caps bound parameters per statement; IN lists are chunked below it.
IN_CHUNK = 900
# The device_state columns, in the order of the fields of the domain's DeviceState (pinned by a test).
STATE_COLS = list(DeviceState._fields)

_SQLITE_DT = "%Y-%m-%d %H:%M:%S.%f"
# Positions in DeviceState (and in a device_state row) of the columns the driver path converts.
DT_AT = tuple(
    i for i, c in enumerate(STATE_COLS) if c in ("last_seen_at", "online_changed_at", "session_started_at")
)
JSON_AT = tuple(i for i, c in enumerate(STATE_COLS) if c in ("health_reasons", "recent_boots"))
_BOOL_AT = tuple(i for i, c in enumerate(STATE_COLS) if c in ("charging", "online"))


def is_sqlite(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "sqlite"


def _states_from_sqlite(rows: Sequence[Any], parsed: dict[str, datetime]) -> list[DeviceState]:
    """Driver rows -> states; converts only the few typed columns (per-column calls cost 2 us each)."""
    out = []
    for row in rows:
        r = list(row)
        for i in DT_AT:
            v = r[i]
            if v is not None:
                dt = parsed.get(v)
                if dt is None:
                    dt = parsed[v] = datetime.fromisoformat(v).replace(tzinfo=UTC)
                r[i] = dt
        for i in JSON_AT:
            v = r[i]
            r[i] = () if v is None or v == "[]" else tuple(json.loads(v))
        for i in _BOOL_AT:
            v = r[i]
            if v is not None:
                r[i] = bool(v)
        out.append(DeviceState._make(r))
    return out


def _states_to_sqlite(states: list[DeviceState]) -> list[tuple[Any, ...]]:
    """States -> driver parameters in column order (the UPDATE below numbers its parameters)."""
    formatted: dict[datetime, str] = {}
    out = []
    for s in states:
        r: list[Any] = list(s)  # bools bind as 0/1 already (bool is an int to sqlite3)
        for i in DT_AT:
            v = r[i]
            if v is not None:
                text = formatted.get(v)
                if text is None:
                    text = formatted[v] = v.astimezone(UTC).strftime(_SQLITE_DT)
                r[i] = text
        for i in JSON_AT:
            v = r[i]
            r[i] = json.dumps(v) if v else "[]"
        out.append(tuple(r))
    return out


async def take_writer_lock(session: AsyncSession, device_id: int) -> None:
    """Take SQLite's writer lock before the batch reads its states.

    Write first, read second: pysqlite opens its transaction at the first write, so reading the states
    before it would let two ingest processes read the same row and the later commit overwrite the
    earlier one's counts (a lost update, seen with two workers on one SQLite file). A one-row no-op
    UPDATE takes SQLite's writer lock (a write statement does, whether or not a row matches), so the
    reads below see every committed batch and no other writer commits meanwhile (PostgreSQL: FOR
    UPDATE)."""
    conn = await session.connection()
    await conn.exec_driver_sql(
        "UPDATE device_state SET device_id = device_id WHERE device_id = ?", (device_id,)
    )


async def load_states(session: AsyncSession, ids: list[int]) -> dict[int, DeviceState]:
    out: dict[int, DeviceState] = {}
    conn = await session.connection()
    cols = ", ".join(STATE_COLS)
    parsed: dict[str, datetime] = {}
    for i in range(0, len(ids), IN_CHUNK):
        chunk = ids[i : i + IN_CHUNK]
        rows = (
            await conn.exec_driver_sql(
                f"SELECT {cols} FROM device_state WHERE device_id IN ({','.join('?' * len(chunk))})",
                tuple(chunk),
            )
        ).all()
        for st in _states_from_sqlite(rows, parsed):
            out[st.device_id] = st
    return out


_UPDATE_SQLITE = (
    "UPDATE device_state SET "
    + ", ".join(f"{c} = ?{i + 1}" for i, c in enumerate(STATE_COLS) if c != "device_id")
    + " WHERE device_id = ?1"
)


async def write_states(session: AsyncSession, states: list[DeviceState]) -> None:
    conn = await session.connection()
    await conn.exec_driver_sql(_UPDATE_SQLITE, _states_to_sqlite(states))


async def upsert_adding(
    session: AsyncSession,
    table_name: str,
    key: tuple[str, ...],
    added: tuple[str, ...],
    cols: tuple[str, ...],
    rows: list[tuple[Any, ...]],
) -> None:
    """Roll-up rows (SQLAlchemy's per-row datetime binding was ~5% of ingest CPU), datetimes in its form."""
    conn = await session.connection()
    await conn.exec_driver_sql(
        f"INSERT INTO {table_name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{c} = {c} + excluded.{c}" for c in added),
        [
            tuple(v.astimezone(UTC).strftime(_SQLITE_DT) if isinstance(v, datetime) else v for v in r)
            for r in rows
        ],
    )


async def insert_transitions(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    # At the bell every device comes online in the same few batches: thousands of rows, through the driver
    # as the states are (same stored forms: naive UTC text, 0/1).
    conn = await session.connection()
    await conn.exec_driver_sql(
        "INSERT INTO presence_transitions (device_id, school_id, at, online, expected, cause) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (
                r["device_id"],
                r["school_id"],
                r["at"].astimezone(UTC).strftime(_SQLITE_DT),
                1 if r["online"] else 0,
                None if r["expected"] is None else (1 if r["expected"] else 0),
                r["cause"],
            )
            for r in rows
        ],
    )
