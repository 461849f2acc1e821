"""The ingest batch writer: loads device states, reduces each device's messages, saves states, writes effects.

The rules (sequence window, presence, health, alerts, commands, pseudonyms, usage) are the pure reducer in
`fleet.domain.device_state`; this module only reads and writes rows. One call applies one batch inside the
caller's transaction (the caller commits, then acks the broker). Rows of device_state are read with FOR UPDATE
on PostgreSQL, in device order, so N workers sharing one stream serialise per device without deadlocks;
SQLite has one writer anyway. The statements are in `fleet.persistence.ingest_rows`, their SQLite driver path
(the stored forms) in `fleet.persistence.ingest_sqlite`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, update
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
    ScreenUsed,
    SessionChanged,
    pseudonym,
    reduce,
)
from fleet.domain.wire import Ack, Channel, Reason, Result, Topics, Uplink, encode_uplink
from fleet.persistence.command_replies import never_sent
from fleet.persistence.ingest_rows import (
    alert_row,
    ensure_states,
    insert_transitions,
    load_states,
    open_alerts_rows,
    resolve_alerts,
    upsert_adding,
    write_states,
)
from fleet.persistence.ingest_screen import ScreenRollup, write_screen
from fleet.persistence.ingest_sqlite import IN_CHUNK, is_sqlite, take_writer_lock
from fleet.persistence.models_mqtt import DeadLetter, DeviceCommand, UsageActive, UsageBytes
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
    # Acks and results for a correlation id never sent to that device, kept as dead letters.
    unknown_replies: int = 0


_T = DeviceStateRow.__table__


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
    topics: Topics | None = None,
) -> BatchOutcome:
    """Apply one batch: load the states, reduce each device's messages (fleet.domain.device_state), save the
    states and write the effects. `driver_fast_path` None: through the driver on SQLite (tests force
    either)."""
    fast = is_sqlite(session) if driver_fast_path is None else driver_fast_path
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
    if is_sqlite(session) and ids:
        # Write first, read second (see take_writer_lock): no lost update between two SQLite writers.
        await take_writer_lock(session, ids[0])
    states = await load_states(session, ids, fast)
    missing = [i for i in ids if i not in states]
    if missing:
        await ensure_states(session, missing)
        states.update(await load_states(session, missing, fast))

    ctx = Context(now, pseudonym_key, expected_offline)
    bytes_acc: dict[tuple[int, int, datetime], list[int]] = {}
    active_acc: dict[tuple[int, datetime], list[int]] = {}
    screen = ScreenRollup()
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
            elif isinstance(e, ScreenUsed):
                screen.add(ref, e)
            else:
                _collect(e, ref, out, transitions, acks, results, open_alerts, resolve_keys)
    out.new, out.duplicates = new, duplicates

    if ids:
        await write_states(session, new_states, fast)
    if bytes_acc:
        # One row per room and 5-minute bucket: up to 500 rows a batch.
        await upsert_adding(
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
        await upsert_adding(
            session,
            UsageActive.__table__,
            ("device_id", "bucket_start"),
            ("active_minutes",),
            ("school_id", "room_id"),
            [(dev, b, n, sch, r) for (dev, b), (n, sch, r) in active_acc.items()],
            fast,
        )
    if screen:
        await write_screen(session, screen, fast)
    if transitions:
        await insert_transitions(session, transitions, fast)
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
    unknown = await _unknown_replies(session, items, now, topics or Topics()) if acks or results else []
    out.unknown_replies = len(unknown)
    if rejected or unknown:
        await add_dead_letters(session, [*rejected, *unknown], dead_letters_max)
    return out


async def _unknown_replies(
    session: AsyncSession, items: list[Inbound], now: datetime, topics: Topics
) -> list[Rejected]:
    """The batch's acks and results for a correlation id never sent to their device, as dead letters."""
    replies: list[tuple[DeviceRef, Channel, Ack | Result]] = []
    for it in items:
        if (type(it.value) is Ack or type(it.value) is Result) and it.ref is not None:
            replies.append((it.ref, it.channel, it.value))
    unknown = await never_sent(session, {(v.id, ref.device_id) for ref, _ch, v in replies})
    out = []
    for ref, channel, v in replies:
        if (v.id, ref.device_id) not in unknown:
            continue
        payload = encode_uplink(v)
        out.append(
            Rejected(
                now,
                Reason.UNKNOWN_CORRELATION_ID.value,
                topics.topic(ref.school_code, ref.username, channel),
                ref.username,
                payload,
                len(payload),
                f"{channel.value} for correlation id {v.id!r}, which was never sent to this device",
            )
        )
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
        open_alerts.append(alert_row(ref, e.rule, e.severity, e.detail, e.at))
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
                alert_row(ref, "unexpected_offline", "warning", "no heartbeat during a lesson", now)
            )
        changes.append((ref, False, expected, "heartbeat_timeout"))
    if transitions:
        await insert_transitions(session, transitions, is_sqlite(session))
    if alerts:
        await open_alerts_rows(session, alerts)
    return changes
