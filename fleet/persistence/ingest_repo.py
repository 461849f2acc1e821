"""The ingest batch writer: loads device states, reduces each device's messages, saves states, writes effects.

The rules (sequence window, presence, health, alerts, commands, pseudonyms, usage) are the pure reducer in
`fleet.domain.device_state`; this module only reads and writes rows. One call applies one batch inside the
caller's transaction (the caller commits, then acks the broker). Rows of device_state are read with FOR UPDATE
on PostgreSQL, in device order, so N workers sharing one stream serialise per device without deadlocks;
SQLite has one writer anyway.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.clock import as_utc
from fleet.domain.device_state import (
    MAX_RECENT_BOOTS,
    ActiveMinute,
    AlertOpened,
    AlertResolved,
    BytesUsed,
    CommandAcked,
    CommandFinished,
    Context,
    DeviceRef,
    DeviceState,
    Effect,
    ExpectedOffline,
    FirmwareReported,
    HealthChanged,
    PresenceChanged,
    SessionChanged,
    pseudonym,
    reduce,
)
from fleet.domain.wire import Channel, Uplink
from fleet.persistence.models_mqtt import (
    Alert,
    DeadLetter,
    DeviceCommand,
    PresenceTransition,
    UsageActive,
    UsageBytes,
)
from fleet.persistence.models_mqtt import DeviceState as DeviceStateRow

# Re-exported: the runtime and tests import these from here.
__all__ = [
    "IN_CHUNK",
    "MAX_RECENT_BOOTS",
    "BatchOutcome",
    "DeviceRef",
    "ExpectedOffline",
    "Inbound",
    "Rejected",
    "add_dead_letters",
    "apply_batch",
    "ensure_states",
    "open_alerts_rows",
    "pseudonym",
    "resolve_alerts",
    "sweep_heartbeats",
]

# SQLite caps bound parameters per statement; IN lists are chunked below it.
IN_CHUNK = 900


@dataclass(slots=True)
class Inbound:
    ref: DeviceRef | None  # None until the writer has looked the identity up
    channel: Channel
    value: Uplink
    received_at: datetime
    unresolved: tuple[str, str, str, bytes] | None = (
        None  # (identity, school, topic, payload) while ref is None
    )


@dataclass(frozen=True, slots=True)
class Rejected:
    received_at: datetime
    reason: str
    topic: str
    identity: str | None
    payload: bytes | None
    payload_size: int
    detail: str


@dataclass(slots=True)
class BatchOutcome:
    new: int = 0
    duplicates: int = 0
    presence: list[tuple[DeviceRef, bool, bool | None, str]] = field(
        default_factory=list
    )  # ref, online, expected, cause
    health: list[tuple[DeviceRef, str]] = field(default_factory=list)
    alerts_opened: list[str] = field(default_factory=list)  # severities
    acks: int = 0
    results: list[tuple[str, bool]] = field(default_factory=list)  # correlation id, ok
    # Commands finished by this batch: (command name, result "ok"/"error"/"rejected", seconds since sent).
    command_durations: list[tuple[str, str, float]] = field(default_factory=list)
    bytes_by_school: dict[str, list[int]] = field(default_factory=dict)  # school code -> [up, down]
    sessions: dict[int, str | None] = field(default_factory=dict)  # device -> pseudonym (None: signed out)
    firmware: dict[int, str] = field(default_factory=dict)  # device -> reported firmware version


# The device_state columns, in the order of the fields of the domain's DeviceState (pinned by a test).
_STATE_COLS = list(DeviceState._fields)
_T = DeviceStateRow.__table__


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


# On SQLite the hot statements (read and write 2,000 device_state rows per batch, the roll-ups, presence
# transitions) go to the driver directly: SQLAlchemy's per-row parameter processing cost ~400 us a row there,
# the driver ~10 us. The values are stored exactly as SQLAlchemy stores them (naive UTC datetime text, JSON
# text, 0/1); tests/persistence/test_ingest_parity.py runs both paths on the same batches and compares rows.
_SQLITE_DT = "%Y-%m-%d %H:%M:%S.%f"
# Positions in DeviceState (and in a device_state row) of the columns the driver path converts.
_DT_AT = tuple(
    i for i, c in enumerate(_STATE_COLS) if c in ("last_seen_at", "online_changed_at", "session_started_at")
)
_JSON_AT = tuple(i for i, c in enumerate(_STATE_COLS) if c in ("health_reasons", "recent_boots"))
_BOOL_AT = tuple(i for i, c in enumerate(_STATE_COLS) if c in ("charging", "online"))


def _is_sqlite(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "sqlite"


def _states_from_sqlite(rows: Sequence[Any], parsed: dict[str, datetime]) -> list[DeviceState]:
    """Driver rows -> states; converts only the few typed columns (per-column calls cost 2 us each)."""
    out = []
    for row in rows:
        r = list(row)
        for i in _DT_AT:
            v = r[i]
            if v is not None:
                dt = parsed.get(v)
                if dt is None:
                    dt = parsed[v] = datetime.fromisoformat(v).replace(tzinfo=UTC)
                r[i] = dt
        for i in _JSON_AT:
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
        for i in _DT_AT:
            v = r[i]
            if v is not None:
                text = formatted.get(v)
                if text is None:
                    text = formatted[v] = v.astimezone(UTC).strftime(_SQLITE_DT)
                r[i] = text
        for i in _JSON_AT:
            v = r[i]
            r[i] = json.dumps(v) if v else "[]"
        out.append(tuple(r))
    return out


def _state_from_row(row: Any) -> DeviceState:
    """A row read through SQLAlchemy -> a state (SQLite gives naive datetimes and JSON lists)."""
    r: list[Any] = list(row)
    for i in _DT_AT:
        if r[i] is not None:
            r[i] = as_utc(r[i])
    for i in _JSON_AT:
        r[i] = tuple(r[i] or ())
    return DeviceState._make(r)


async def _load_states(session: AsyncSession, ids: list[int], fast: bool) -> dict[int, DeviceState]:
    out: dict[int, DeviceState] = {}
    if fast:
        conn = await session.connection()
        cols = ", ".join(_STATE_COLS)
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
    cols_ = [_T.c[c] for c in _STATE_COLS]
    for i in range(0, len(ids), IN_CHUNK):
        chunk = ids[i : i + IN_CHUNK]
        stmt = select(*cols_).where(_T.c.device_id.in_(chunk)).order_by(_T.c.device_id).with_for_update()
        for row in (await session.execute(stmt)).all():
            out[row[0]] = _state_from_row(row)
    return out


_UPDATE_SQLITE = (
    "UPDATE device_state SET "
    + ", ".join(f"{c} = ?{i + 1}" for i, c in enumerate(_STATE_COLS) if c != "device_id")
    + " WHERE device_id = ?1"
)


async def _write_states(session: AsyncSession, states: list[DeviceState], fast: bool) -> None:
    if fast:
        conn = await session.connection()
        await conn.exec_driver_sql(_UPDATE_SQLITE, _states_to_sqlite(states))
        return
    names = ["b_" + c for c in _STATE_COLS]
    await session.execute(
        update(_T)
        .where(_T.c.device_id == bindparam("b_device_id"))
        .values({c: bindparam("b_" + c) for c in _STATE_COLS if c != "device_id"}),
        [dict(zip(names, s, strict=True)) for s in states],
        execution_options={"synchronize_session": False},
    )


async def ensure_states(session: AsyncSession, ids: Iterable[int]) -> None:
    rows = [{"device_id": i} for i in ids]
    if rows:
        await session.execute(_insert(session, _T).on_conflict_do_nothing(index_elements=["device_id"]), rows)


async def apply_batch(
    session: AsyncSession,
    items: list[Inbound],
    rejected: list[Rejected],
    *,
    now: datetime,
    pseudonym_key: str,
    expected_offline: ExpectedOffline,
    dead_letters_max: int,
    driver_fast_path: bool | None = None,
) -> BatchOutcome:
    """Apply one batch: load the states, reduce each device's messages (fleet.domain.device_state), save the
    states and write the effects. `driver_fast_path` None: through the driver on SQLite (tests force
    either)."""
    fast = _is_sqlite(session) if driver_fast_path is None else driver_fast_path
    out = BatchOutcome()
    by_dev: dict[int, list[tuple[Uplink, datetime]]] = {}
    refs: dict[int, DeviceRef] = {}
    for it in items:
        ref = it.ref
        assert ref is not None
        msgs = by_dev.get(ref.device_id)
        if msgs is None:
            msgs = by_dev[ref.device_id] = []
            refs[ref.device_id] = ref
        msgs.append((it.value, it.received_at))
    ids = sorted(by_dev)
    if _is_sqlite(session) and ids:
        # Write first, read second: pysqlite opens its transaction at the first write, so reading the states
        # before it would let two ingest processes read the same row and the later commit overwrite the
        # earlier one's counts (a lost update, seen with two workers on one SQLite file). A one-row no-op
        # UPDATE takes SQLite's writer lock (a write statement does, whether or not a row matches), so the
        # reads below see every committed batch and no other writer commits meanwhile (PostgreSQL: FOR
        # UPDATE).
        conn = await session.connection()
        await conn.exec_driver_sql(
            "UPDATE device_state SET device_id = device_id WHERE device_id = ?", (ids[0],)
        )
    states = await _load_states(session, ids, fast)
    missing = [i for i in ids if i not in states]
    if missing:
        await ensure_states(session, missing)
        states.update(await _load_states(session, missing, fast))

    ctx = Context(now, pseudonym_key, expected_offline)
    bytes_acc: dict[tuple[int, int, datetime], list[int]] = {}
    active_acc: dict[tuple[int, datetime], list[int]] = {}
    transitions: list[dict[str, Any]] = []
    acks: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    open_alerts: list[dict[str, Any]] = []
    resolve_keys: list[str] = []
    new_states: list[DeviceState] = []
    new = duplicates = 0

    for dev_id in ids:
        before = states[dev_id]
        ref = refs[dev_id]
        st, effects = reduce(before, by_dev[dev_id], ref, ctx)
        new_states.append(st)
        new += st.messages_total - before.messages_total
        duplicates += st.duplicates_total - before.duplicates_total
        for e in effects:
            if isinstance(e, BytesUsed):
                key = (ref.school_id, ref.room_id or 0, e.bucket_start)
                acc = bytes_acc.get(key)
                if acc is None:
                    bytes_acc[key] = [e.up, e.down]
                else:
                    acc[0] += e.up
                    acc[1] += e.down
                sb = out.bytes_by_school.get(ref.school_code)
                if sb is None:
                    sb = out.bytes_by_school[ref.school_code] = [0, 0]
                sb[0] += e.up
                sb[1] += e.down
            elif isinstance(e, ActiveMinute):
                akey = (dev_id, e.bucket_start)
                if akey in active_acc:
                    active_acc[akey][0] += 1
                else:
                    active_acc[akey] = [1, ref.school_id, ref.room_id or 0]
            else:
                _collect(e, ref, out, transitions, acks, results, open_alerts, resolve_keys)
    out.new, out.duplicates = new, duplicates

    if ids:
        await _write_states(session, new_states, fast)
    if bytes_acc:
        # One row per room and 5-minute bucket: up to 500 rows a batch.
        await _upsert_adding(
            session,
            UsageBytes.__table__,
            ("school_id", "room_id", "bucket_start"),
            ("bytes_up", "bytes_down"),
            (),
            [(s, r, b, u, d) for (s, r, b), (u, d) in bytes_acc.items()],
            fast,
        )
    if active_acc:
        # One row per device on its first message of a minute: with 60 s telemetry that is every message.
        await _upsert_adding(
            session,
            UsageActive.__table__,
            ("device_id", "bucket_start"),
            ("active_minutes",),
            ("school_id", "room_id"),
            [(dev, b, n, sch, r) for (dev, b), (n, sch, r) in active_acc.items()],
            fast,
        )
    if transitions:
        await _insert_transitions(session, transitions, fast)
    if resolve_keys:
        await resolve_alerts(session, resolve_keys, now, by="system")
    if open_alerts:
        await open_alerts_rows(session, open_alerts)
        out.alerts_opened.extend(a["severity"] for a in open_alerts)
    ct = DeviceCommand.__table__
    if acks or results:
        await _command_durations(session, acks, results, out)
    if acks:
        await session.execute(
            update(ct)
            .where(
                ct.c.correlation_id == bindparam("b_cid"),
                ct.c.device_id == bindparam("b_dev"),
                # or_, not in_: an expanding IN cannot run as executemany (several acks a batch)
                or_(ct.c.status == "queued", ct.c.status == "sent"),
            )
            .values(
                status=bindparam("b_status"),
                acked_at=bindparam("b_at"),
                ack_reason=bindparam("b_reason"),
                finished_at=bindparam("b_finished"),
            ),
            acks,
            execution_options={"synchronize_session": False},
        )
    if results:
        await session.execute(
            update(ct)
            .where(
                ct.c.correlation_id == bindparam("b_cid"),
                ct.c.device_id == bindparam("b_dev"),
                or_(*(ct.c.status == st for st in ("queued", "sent", "acked", "timed_out"))),
            )
            .values(
                status=bindparam("b_status"),
                finished_at=bindparam("b_at"),
                result_code=bindparam("b_code"),
                result_detail=bindparam("b_detail"),
            ),
            results,
            execution_options={"synchronize_session": False},
        )
    if rejected:
        await add_dead_letters(session, rejected, dead_letters_max)
    return out


def _collect(
    e: Effect,
    ref: DeviceRef,
    out: BatchOutcome,
    transitions: list[dict[str, Any]],
    acks: list[dict[str, Any]],
    results: list[dict[str, Any]],
    open_alerts: list[dict[str, Any]],
    resolve_keys: list[str],
) -> None:
    """The rows (and outcome entries) of one of the rarer effects; usage is summed inline by the caller."""
    dev_id = ref.device_id
    if isinstance(e, PresenceChanged):
        transitions.append(
            {
                "device_id": dev_id,
                "school_id": ref.school_id,
                "at": e.at,
                "online": e.online,
                "expected": e.expected,
                "cause": e.cause,
            }
        )
        out.presence.append((ref, e.online, e.expected, e.cause))
    elif isinstance(e, AlertOpened):
        open_alerts.append(_alert_row(ref, e.rule, e.severity, e.detail, e.at))
    elif isinstance(e, AlertResolved):
        resolve_keys.append(f"{dev_id}:{e.rule}")
    elif isinstance(e, CommandAcked):
        acks.append(
            {
                "b_cid": e.correlation_id,
                "b_dev": dev_id,
                "b_status": "acked" if e.accepted else "rejected",
                "b_at": e.at,
                "b_reason": e.reason,
                "b_finished": None if e.accepted else e.at,
            }
        )
        out.acks += 1
    elif isinstance(e, CommandFinished):
        results.append(
            {
                "b_cid": e.correlation_id,
                "b_dev": dev_id,
                "b_status": "succeeded" if e.ok else "failed",
                "b_at": e.at,
                "b_code": e.code,
                "b_detail": e.detail,
            }
        )
        out.results.append((e.correlation_id, e.ok))
    elif isinstance(e, HealthChanged):
        out.health.append((ref, e.health))
    elif isinstance(e, SessionChanged):
        out.sessions[dev_id] = e.pseudonym
    elif isinstance(e, FirmwareReported):
        out.firmware[dev_id] = e.version


async def _command_durations(
    session: AsyncSession, acks: list[dict[str, Any]], results: list[dict[str, Any]], out: BatchOutcome
) -> None:
    """Sent-to-finished time of the commands this batch finishes (a result, or an ack refusing the command);
    read before the update, with the update's own status guard, so a late or repeated reply is not counted."""
    ct = DeviceCommand.__table__
    # (correlation id, device) -> (outcome, finished at, the statuses it may finish from)
    finishing: dict[tuple[str, int], tuple[str, Any, tuple[str, ...]]] = {
        (r["b_cid"], r["b_dev"]): (
            "ok" if r["b_status"] == "succeeded" else "error",
            r["b_at"],
            ("queued", "sent", "acked", "timed_out"),
        )
        for r in results
    }
    for a in acks:
        if a["b_status"] == "rejected":
            finishing.setdefault((a["b_cid"], a["b_dev"]), ("rejected", a["b_at"], ("queued", "sent")))
    cids = sorted({cid for cid, _ in finishing})
    for i in range(0, len(cids), IN_CHUNK):
        rows = (
            await session.execute(
                select(ct.c.correlation_id, ct.c.device_id, ct.c.name, ct.c.status, ct.c.sent_at).where(
                    ct.c.correlation_id.in_(cids[i : i + IN_CHUNK])
                )
            )
        ).all()
        for cid, dev, name, status, sent_at in rows:
            hit = finishing.get((cid, dev))
            if hit is None or status not in hit[2] or sent_at is None:
                continue
            seconds = (hit[1] - as_utc(sent_at)).total_seconds()
            out.command_durations.append((name, hit[0], max(0.0, seconds)))


def _alert_row(ref: DeviceRef, rule: str, severity: str, detail: str, at: datetime) -> dict[str, Any]:
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
    ins = _insert(session, t)
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


async def _upsert_adding(
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
        ins = _insert(session, table)
        await session.execute(
            ins.on_conflict_do_update(
                index_elements=list(key), set_={c: table.c[c] + ins.excluded[c] for c in added}
            ),
            [dict(zip(cols, r, strict=True)) for r in rows],
        )
        return
    conn = await session.connection()
    await conn.exec_driver_sql(
        f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{c} = {c} + excluded.{c}" for c in added),
        [
            tuple(v.astimezone(UTC).strftime(_SQLITE_DT) if isinstance(v, datetime) else v for v in r)
            for r in rows
        ],
    )


async def _insert_transitions(session: AsyncSession, rows: list[dict[str, Any]], fast: bool) -> None:
    if not fast:
        await session.execute(PresenceTransition.__table__.insert(), rows)
        return
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


async def add_dead_letters(session: AsyncSession, rejected: list[Rejected], keep: int) -> None:
    await session.execute(
        DeadLetter.__table__.insert(),
        [
            {
                "received_at": r.received_at,
                "reason": r.reason,
                "topic": r.topic[:256],
                "identity": r.identity,
                "payload": r.payload,
                "payload_size": r.payload_size,
                "detail": r.detail[:300],
            }
            for r in rejected
        ],
    )
    t = DeadLetter.__table__
    top = (await session.execute(select(func.max(t.c.id)))).scalar_one()
    if top is not None and top > keep:
        await session.execute(delete(t).where(t.c.id <= top - keep))


async def sweep_heartbeats(
    session: AsyncSession,
    *,
    now: datetime,
    timeout_s: int,
    refs: Callable[[int], DeviceRef | None],
    expected_offline: ExpectedOffline,
) -> list[tuple[DeviceRef, bool, bool | None, str]]:
    """Mark devices silent for timeout_s offline (the backstop behind the Last Will)."""
    cutoff = now - timedelta(seconds=timeout_s)
    # One UPDATE ... RETURNING, re-checking last_seen, so a message committed meanwhile by a worker wins.
    rows = (
        (
            await session.execute(
                update(_T)
                .where(_T.c.online.is_(True), _T.c.last_seen_at < cutoff)
                .values(online=False, online_changed_at=now)
                .returning(_T.c.device_id),
                execution_options={"synchronize_session": False},
            )
        )
        .scalars()
        .all()
    )
    changes: list[tuple[DeviceRef, bool, bool | None, str]] = []
    transitions, alerts = [], []
    for dev_id in rows:
        ref = refs(dev_id)
        if ref is None:
            continue
        expected = expected_offline(ref, now)
        transitions.append(
            {
                "device_id": dev_id,
                "school_id": ref.school_id,
                "at": now,
                "online": False,
                "expected": expected,
                "cause": "heartbeat_timeout",
            }
        )
        if not expected:
            alerts.append(
                _alert_row(ref, "unexpected_offline", "warning", "no heartbeat during a lesson", now)
            )
        changes.append((ref, False, expected, "heartbeat_timeout"))
    if transitions:
        await _insert_transitions(session, transitions, _is_sqlite(session))
    if alerts:
        await open_alerts_rows(session, alerts)
    return changes
