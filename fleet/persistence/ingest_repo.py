"""The ingest batch writer: latest state guarded by sequence window, roll-ups, presence, alerts, dead letters.

One call applies one batch inside the caller's transaction (the caller commits, then acks the broker). Rows
of device_state are read with FOR UPDATE on PostgreSQL, in device order, so N workers sharing one stream
serialise per device without deadlocks; SQLite has one writer anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain import health as health_rules
from fleet.domain import seqwindow
from fleet.domain.clock import as_utc
from fleet.domain.wire import Ack, Channel, Event, EventType, Heartbeat, Result, Status, Telemetry, Uplink
from fleet.persistence.models_mqtt import (
    ACTIVE_BUCKET_SECONDS,
    BYTES_BUCKET_SECONDS,
    Alert,
    DeadLetter,
    DeviceCommand,
    DeviceState,
    PresenceTransition,
    UsageActive,
    UsageBytes,
)

# Boot timestamps kept per device for the repeated-reboots rule.
MAX_RECENT_BOOTS = 10
# SQLite caps bound parameters per statement; IN lists are chunked below it.
IN_CHUNK = 900


@dataclass(frozen=True, slots=True)
class DeviceRef:
    device_id: int
    school_id: int
    room_id: int | None
    school_code: str
    username: str
    revoked: bool
    model: str
    device_kind: str
    room_kind: str | None
    thresholds: health_rules.Thresholds = health_rules.DEFAULT_THRESHOLDS


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


ExpectedOffline = Callable[[DeviceRef, datetime], bool]

_STATE_COLS = [
    "device_id",
    "last_seen_at",
    "last_seq",
    "seq_mask",
    "last_ts_ms",
    "state_seq",
    "battery_pct",
    "charging",
    "temperature_c",
    "storage_used_pct",
    "firmware_version",
    "app",
    "rssi_dbm",
    "bytes_up_total",
    "bytes_down_total",
    "messages_total",
    "duplicates_total",
    "last_active_minute",
    "online",
    "online_changed_at",
    "health",
    "health_reasons",
    "recent_boots",
    "last_error_code",
    "session_pseudonym",
    "session_started_at",
]
_T = DeviceState.__table__


def pseudonym(key: str, user: str) -> str:
    """The keyed pseudonym that replaces a login reference (HMAC-SHA256, 128 bits hex)."""
    return hmac.new(key.encode(), user.encode(), hashlib.sha256).hexdigest()[:32]


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _bucket(at: datetime, seconds: int) -> datetime:
    epoch = int(at.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


# On SQLite the two hot statements (read and write 2,000 device_state rows per batch) go to the driver
# directly: SQLAlchemy's per-row parameter processing cost ~400 us a row there, the driver ~10 us. The values
# are stored exactly as SQLAlchemy stores them (naive UTC datetime text, JSON text, 0/1), so both paths agree.
_DT_COLS = frozenset({"last_seen_at", "online_changed_at", "session_started_at"})
_JSON_COLS = frozenset({"health_reasons", "recent_boots"})
_BOOL_COLS = frozenset({"charging", "online"})
_SQLITE_DT = "%Y-%m-%d %H:%M:%S.%f"


def _is_sqlite(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "sqlite"


_UPD_COLS = [c for c in _STATE_COLS if c != "device_id"]
_UPD_DT = [i for i, c in enumerate(_UPD_COLS) if c in _DT_COLS]
_UPD_JSON = [i for i, c in enumerate(_UPD_COLS) if c in _JSON_COLS]
_UPD_BOOL = [i for i, c in enumerate(_UPD_COLS) if c in _BOOL_COLS]


def _rows_from_sqlite(rows: list[Any]) -> list[dict[str, Any]]:
    """Driver rows -> state dicts; converts only the few typed columns (per-column calls cost 2 us each)."""
    parsed: dict[str, datetime] = {}
    out = []
    for row in rows:
        d = dict(zip(_STATE_COLS, row, strict=True))
        for c in _DT_COLS:
            v = d[c]
            if v is not None:
                dt = parsed.get(v)
                if dt is None:
                    dt = parsed[v] = datetime.fromisoformat(v).replace(tzinfo=UTC)
                d[c] = dt
        for c in _JSON_COLS:
            v = d[c]
            d[c] = [] if v is None or v == "[]" else json.loads(v)
        d["online"] = bool(d["online"])
        if d["charging"] is not None:
            d["charging"] = bool(d["charging"])
        out.append(d)
    return out


def _rows_to_sqlite(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    formatted: dict[datetime, str] = {}
    out = []
    for r in rows:
        vals = [r[c] for c in _UPD_COLS]
        for i in _UPD_DT:
            v = vals[i]
            if v is not None:
                text = formatted.get(v)
                if text is None:
                    text = formatted[v] = (v.astimezone(UTC) if v.tzinfo else v).strftime(_SQLITE_DT)
                vals[i] = text
        for i in _UPD_JSON:
            v = vals[i]
            if v is not None:
                vals[i] = json.dumps(v) if v else "[]"
        for i in _UPD_BOOL:
            v = vals[i]
            if v is not None:
                vals[i] = 1 if v else 0
        vals.append(r["device_id"])
        out.append(tuple(vals))
    return out


async def _load_states(session: AsyncSession, ids: list[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    if _is_sqlite(session):
        conn = await session.connection()
        cols = ", ".join(_STATE_COLS)
        for i in range(0, len(ids), IN_CHUNK):
            chunk = ids[i : i + IN_CHUNK]
            rows = (
                await conn.exec_driver_sql(
                    f"SELECT {cols} FROM device_state WHERE device_id IN ({','.join('?' * len(chunk))})",
                    tuple(chunk),
                )
            ).all()
            for d in _rows_from_sqlite(rows):
                out[d["device_id"]] = d
        return out
    cols_ = [_T.c[c] for c in _STATE_COLS]
    for i in range(0, len(ids), IN_CHUNK):
        chunk = ids[i : i + IN_CHUNK]
        stmt = select(*cols_).where(_T.c.device_id.in_(chunk)).order_by(_T.c.device_id).with_for_update()
        for row in (await session.execute(stmt)).all():
            out[row[0]] = dict(zip(_STATE_COLS, row, strict=True))
    return out


async def _write_states(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if _is_sqlite(session):
        conn = await session.connection()
        sql = f"UPDATE device_state SET {', '.join(c + ' = ?' for c in _UPD_COLS)} WHERE device_id = ?"
        await conn.exec_driver_sql(sql, _rows_to_sqlite(rows))
        return
    await session.execute(
        update(_T)
        .where(_T.c.device_id == bindparam("b_device_id"))
        .values({c: bindparam("b_" + c) for c in _STATE_COLS if c != "device_id"}),
        [{"b_" + k: v for k, v in r.items()} for r in rows],
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
) -> BatchOutcome:
    out = BatchOutcome()
    by_dev: dict[int, list[Inbound]] = defaultdict(list)
    for it in items:
        by_dev[it.ref.device_id].append(it)  # type: ignore[union-attr]
    ids = sorted(by_dev)
    if _is_sqlite(session) and ids:
        # Write first, read second: pysqlite opens its transaction at the first write, so reading the states
        # before it would let two ingest processes read the same row and the later commit overwrite the
        # earlier one's counts (a lost update, seen with two workers on one SQLite file). A one-row no-op
        # UPDATE takes SQLite's writer lock (a write statement does, whether or not a row matches), so the
        # reads below see every committed batch and no other writer commits meanwhile (PostgreSQL: FOR UPDATE).
        conn = await session.connection()
        await conn.exec_driver_sql(
            "UPDATE device_state SET device_id = device_id WHERE device_id = ?", (ids[0],)
        )
    states = await _load_states(session, ids)
    missing = [i for i in ids if i not in states]
    if missing:
        await ensure_states(session, missing)
        states.update(await _load_states(session, missing))

    bytes_acc: dict[tuple[int, int, datetime], list[int]] = defaultdict(lambda: [0, 0])
    active_acc: dict[tuple[int, datetime], list[int]] = {}
    transitions: list[dict[str, Any]] = []
    acks: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    open_alerts: list[dict[str, Any]] = []
    resolve_keys: list[str] = []
    now_ms = int(now.timestamp() * 1000)
    # Receive time -> its bytes bucket: messages read in the same millisecond share one datetime.
    bytes_buckets: dict[datetime, datetime] = {}

    for dev_id in ids:
        st = states[dev_id]
        ref = by_dev[dev_id][0].ref
        assert ref is not None
        health_touched = False
        before_inputs = (
            st["battery_pct"],
            st["charging"],
            st["temperature_c"],
            st["storage_used_pct"],
            st["last_error_code"],
            len(st["recent_boots"] or ()),
        )
        for it in by_dev[dev_id]:
            v = it.value
            at = it.received_at
            if isinstance(v, (Telemetry, Heartbeat, Event)):
                is_new, st["last_seq"], st["seq_mask"] = seqwindow.accept(
                    st["last_seq"], st["seq_mask"], v.seq
                )
                if not is_new:
                    st["duplicates_total"] += 1
                    out.duplicates += 1
                    continue
                out.new += 1
                st["messages_total"] += 1
                if st["last_ts_ms"] is None or v.ts_ms > st["last_ts_ms"]:
                    st["last_ts_ms"] = v.ts_ms
                if isinstance(v, Telemetry):
                    if v.bytes_up or v.bytes_down:
                        st["bytes_up_total"] += v.bytes_up
                        st["bytes_down_total"] += v.bytes_down
                        bucket = bytes_buckets.get(at)
                        if bucket is None:
                            bucket = bytes_buckets[at] = _bucket(at, BYTES_BUCKET_SECONDS)
                        acc = bytes_acc[(ref.school_id, ref.room_id or 0, bucket)]
                        acc[0] += v.bytes_up
                        acc[1] += v.bytes_down
                        sb = out.bytes_by_school.setdefault(ref.school_code, [0, 0])
                        sb[0] += v.bytes_up
                        sb[1] += v.bytes_down
                    # Latest fields only move forward: an older telemetry arriving late (another worker,
                    # a redelivery) still counts its bytes but never overwrites newer readings.
                    if v.seq > st["state_seq"]:
                        st["state_seq"] = v.seq
                        st["battery_pct"] = v.battery_pct
                        st["charging"] = v.charging
                        st["temperature_c"] = v.temperature_c
                        st["storage_used_pct"] = v.storage_used_pct
                        if v.firmware is not None:
                            st["firmware_version"] = v.firmware
                            out.firmware[dev_id] = v.firmware
                        st["app"] = v.app
                        if v.rssi_dbm is not None:
                            st["rssi_dbm"] = v.rssi_dbm
                        health_touched = True
                elif isinstance(v, Heartbeat):
                    if v.rssi_dbm is not None:
                        st["rssi_dbm"] = v.rssi_dbm
                else:
                    _apply_event(st, v, at, pseudonym_key, out, dev_id)
                    health_touched = True
                minute = int(at.timestamp()) // 60
                if minute > st["last_active_minute"]:
                    st["last_active_minute"] = minute
                    key = (dev_id, _bucket(at, ACTIVE_BUCKET_SECONDS))
                    if key in active_acc:
                        active_acc[key][0] += 1
                    else:
                        active_acc[key] = [1, ref.school_id, ref.room_id or 0]
            elif isinstance(v, Ack):
                acks.append(
                    {
                        "b_cid": v.id,
                        "b_dev": dev_id,
                        "b_status": "acked" if v.accepted else "rejected",
                        "b_at": at,
                        "b_reason": v.reason,
                        "b_finished": None if v.accepted else at,
                    }
                )
                out.acks += 1
            elif isinstance(v, Result):
                results.append(
                    {
                        "b_cid": v.id,
                        "b_dev": dev_id,
                        "b_status": "succeeded" if v.ok else "failed",
                        "b_at": at,
                        "b_code": v.code,
                        "b_detail": v.detail,
                    }
                )
                out.results.append((v.id, v.ok))
            if isinstance(v, Status) and not v.online:
                if st["online"] or st["online_changed_at"] is None:
                    st["online"] = False
                    st["online_changed_at"] = at
                    expected = expected_offline(ref, at)
                    cause = (
                        "lwt" if v.reason == "lwt" else ("shutdown" if v.reason == "shutdown" else "status")
                    )
                    transitions.append(
                        {
                            "device_id": dev_id,
                            "school_id": ref.school_id,
                            "at": at,
                            "online": False,
                            "expected": expected,
                            "cause": cause,
                        }
                    )
                    out.presence.append((ref, False, expected, cause))
                    if not expected:
                        open_alerts.append(
                            _alert_row(
                                ref, "unexpected_offline", "warning", f"offline ({cause}) during a lesson", at
                            )
                        )
            else:
                last_seen = None if st["last_seen_at"] is None else as_utc(st["last_seen_at"])
                if last_seen is None or at > last_seen:
                    st["last_seen_at"] = at
                if not st["online"]:
                    st["online"] = True
                    st["online_changed_at"] = at
                    cause = "status" if isinstance(v, Status) else "message"
                    transitions.append(
                        {
                            "device_id": dev_id,
                            "school_id": ref.school_id,
                            "at": at,
                            "online": True,
                            "expected": None,
                            "cause": cause,
                        }
                    )
                    out.presence.append((ref, True, None, cause))
                    resolve_keys.append(f"{dev_id}:unexpected_offline")
        inputs = (
            st["battery_pct"],
            st["charging"],
            st["temperature_c"],
            st["storage_used_pct"],
            st["last_error_code"],
            len(st["recent_boots"] or ()),
        )
        if health_touched and (inputs != before_inputs or st["health"] == "unknown"):
            # Re-evaluated only when a rule input changed: most telemetry repeats the last reading.
            findings = health_rules.evaluate(
                ref.thresholds,
                battery=st["battery_pct"],
                charging=st["charging"],
                temperature=st["temperature_c"],
                storage=st["storage_used_pct"],
                error_code=st["last_error_code"],
                boots_ms=st["recent_boots"] or [],
                now_ms=now_ms,
            )
            new_state = health_rules.state_of(findings)
            before = set(st["health_reasons"] or [])
            after = {f.rule for f in findings}
            for f in findings:
                if f.rule not in before:
                    open_alerts.append(_alert_row(ref, f.rule, f.severity, f.detail, now))
            resolve_keys.extend(f"{dev_id}:{rule}" for rule in before - after)
            st["health_reasons"] = sorted(after)
            if new_state != st["health"]:
                st["health"] = new_state
                out.health.append((ref, new_state))

    if ids:
        await _write_states(session, [states[i] for i in ids])
    if bytes_acc:
        # One row per room and 5-minute bucket: up to 500 rows a batch.
        await _upsert_adding(
            session,
            UsageBytes.__table__,
            ("school_id", "room_id", "bucket_start"),
            ("bytes_up", "bytes_down"),
            (),
            [(s, r, b, u, d) for (s, r, b), (u, d) in bytes_acc.items()],
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
        )
    if transitions:
        await _insert_transitions(session, transitions)
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


async def _command_durations(
    session: AsyncSession, acks: list[dict[str, Any]], results: list[dict[str, Any]], out: BatchOutcome
) -> None:
    """Sent-to-finished time of the commands this batch finishes (a result, or an ack refusing the command);
    read before the update, with the update's own status guard, so a late or repeated reply is not counted."""
    ct = DeviceCommand.__table__
    finishing = {
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
            seconds = (hit[1] - as_utc(sent_at)).total_seconds()  # type: ignore[operator]
            out.command_durations.append((name, hit[0], max(0.0, seconds)))


def _apply_event(
    st: dict[str, Any], v: Event, at: datetime, key: str, out: BatchOutcome, dev_id: int
) -> None:
    if v.type == EventType.BOOT:
        boots = list(st["recent_boots"] or []) + [v.ts_ms]
        st["recent_boots"] = boots[-MAX_RECENT_BOOTS:]
        # A reboot clears a reported error: the error-code rule reflects the current boot only.
        st["last_error_code"] = None
        st["session_pseudonym"] = None
        st["session_started_at"] = None
    elif v.type == EventType.ERROR:
        st["last_error_code"] = v.code
    elif v.type == EventType.LOGIN and v.user is not None:
        st["session_pseudonym"] = pseudonym(key, v.user)
        st["session_started_at"] = at
        out.sessions[dev_id] = st["session_pseudonym"]
    elif v.type == EventType.LOGOUT:
        st["session_pseudonym"] = None
        st["session_started_at"] = None
        out.sessions[dev_id] = None


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
) -> None:
    """Insert roll-up rows (columns: key + added + extra); on a key already there, add the `added` columns.

    On SQLite through the driver, as the states are (SQLAlchemy's per-row datetime binding was ~5% of ingest
    CPU), with datetimes stored in SQLAlchemy's form."""
    cols = key + added + extra
    if not _is_sqlite(session):
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


async def _insert_transitions(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if not _is_sqlite(session):
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
        await _insert_transitions(session, transitions)
    if alerts:
        await open_alerts_rows(session, alerts)
    return changes
