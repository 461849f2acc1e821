"""The rows the ingest writer reads and writes: device states, usage roll-ups, presence transitions, alerts.

Each statement through SQLAlchemy, or (`fast`) through the SQLite driver (`fleet.persistence.ingest_sqlite`,
which stores the same values). Flush only: the caller's transaction commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.clock import as_utc
from fleet.domain.device_state import DeviceRef, DeviceState
from fleet.persistence import ingest_sqlite
from fleet.persistence.ingest_sqlite import IN_CHUNK, STATE_COLS
from fleet.persistence.models_mqtt import Alert, PresenceTransition
from fleet.persistence.models_mqtt import DeviceState as DeviceStateRow

_T = DeviceStateRow.__table__


def dialect_insert(session: AsyncSession, table: Any) -> Any:
    """An INSERT in the session's dialect, which can take ON CONFLICT (PostgreSQL, or SQLite)."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


# ---------------------------------------------------------------- device states


def _state_from_row(row: Any) -> DeviceState:
    """A row read through SQLAlchemy -> a state (SQLite gives naive datetimes and JSON lists)."""
    r: list[Any] = list(row)
    for i in ingest_sqlite.DT_AT:
        if r[i] is not None:
            r[i] = as_utc(r[i])
    for i in ingest_sqlite.JSON_AT:
        r[i] = tuple(r[i] or ())
    return DeviceState._make(r)


async def load_states(session: AsyncSession, ids: list[int], fast: bool) -> dict[int, DeviceState]:
    """The states of `ids`; through SQLAlchemy read FOR UPDATE in device order, so N workers sharing one
    stream serialise per device without deadlocks."""
    if fast:
        return await ingest_sqlite.load_states(session, ids)
    out: dict[int, DeviceState] = {}
    cols_ = [_T.c[c] for c in STATE_COLS]
    for i in range(0, len(ids), IN_CHUNK):
        chunk = ids[i : i + IN_CHUNK]
        stmt = select(*cols_).where(_T.c.device_id.in_(chunk)).order_by(_T.c.device_id).with_for_update()
        for row in (await session.execute(stmt)).all():
            out[row[0]] = _state_from_row(row)
    return out


async def write_states(session: AsyncSession, states: list[DeviceState], fast: bool) -> None:
    if fast:
        await ingest_sqlite.write_states(session, states)
        return
    names = ["b_" + c for c in STATE_COLS]
    await session.execute(
        update(_T)
        .where(_T.c.device_id == bindparam("b_device_id"))
        .values({c: bindparam("b_" + c) for c in STATE_COLS if c != "device_id"}),
        [dict(zip(names, s, strict=True)) for s in states],
        execution_options={"synchronize_session": False},
    )


async def ensure_states(session: AsyncSession, ids: Iterable[int]) -> None:
    rows = [{"device_id": i} for i in ids]
    if rows:
        await session.execute(
            dialect_insert(session, _T).on_conflict_do_nothing(index_elements=["device_id"]), rows
        )


# ---------------------------------------------------------------- roll-ups and presence transitions


async def upsert_adding(
    session: AsyncSession,
    table: Any,
    key: tuple[str, ...],
    added: tuple[str, ...],
    extra: tuple[str, ...],
    rows: list[tuple[Any, ...]],
    fast: bool,
) -> None:
    """Insert roll-up rows (columns: key + added + extra); on a key already there, add the `added` columns.

    On SQLite through the driver, as the states are (SQLAlchemy's per-row datetime binding was ~5% of ingest
    CPU), with datetimes stored in SQLAlchemy's form."""
    cols = key + added + extra
    if not fast:
        ins = dialect_insert(session, table)
        await session.execute(
            ins.on_conflict_do_update(
                index_elements=list(key), set_={c: table.c[c] + ins.excluded[c] for c in added}
            ),
            [dict(zip(cols, r, strict=True)) for r in rows],
        )
        return
    await ingest_sqlite.upsert_adding(session, table.name, key, added, cols, rows)


async def insert_transitions(session: AsyncSession, rows: list[dict[str, Any]], fast: bool) -> None:
    if not fast:
        await session.execute(PresenceTransition.__table__.insert(), rows)
        return
    await ingest_sqlite.insert_transitions(session, rows)


# ---------------------------------------------------------------- alerts


def alert_row(ref: DeviceRef, rule: str, severity: str, detail: str, at: datetime) -> dict[str, Any]:
    return {
        "device_id": ref.device_id,
        "school_id": ref.school_id,
        "room_id": ref.room_id,
        "rule": rule,
        "severity": severity,
        "status": "open",
        "dedup_key": f"{ref.device_id}:{rule}",
        "detail": detail[:300],
        "occurrences": 1,
        "opened_at": at,
        "last_seen_at": at,
    }


async def open_alerts_rows(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Open alerts, or bump the open one with the same device and rule (deduplication)."""
    t = Alert.__table__
    ins = dialect_insert(session, t)
    await session.execute(
        ins.on_conflict_do_update(
            index_elements=["dedup_key"],
            set_={"occurrences": t.c.occurrences + 1, "last_seen_at": ins.excluded.last_seen_at},
        ),
        rows,
    )


async def resolve_alerts(session: AsyncSession, keys: list[str], at: datetime, *, by: str) -> None:
    """Resolve the open alerts with these dedup keys (keys without an open alert are no-ops).

    One UPDATE ... WHERE dedup_key IN (...) per chunk, not one statement per key: at the bell every device
    coming online resolves its unexpected-offline key, and almost none has one open."""
    t = Alert.__table__
    for i in range(0, len(keys), IN_CHUNK):
        await session.execute(
            update(t)
            .where(t.c.dedup_key.in_(keys[i : i + IN_CHUNK]))
            .values(status="resolved", dedup_key=None, resolved_at=at, resolved_by=by),
            execution_options={"synchronize_session": False},
        )
