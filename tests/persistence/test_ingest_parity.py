"""The ingest writer's SQLite driver path stores exactly what its SQLAlchemy path stores.

`ingest_repo` writes device states, roll-ups and presence transitions through the sqlite3 driver on SQLite
(`ingest_sqlite`; SQLAlchemy's per-row processing was most of the ingest cost there) and through SQLAlchemy
elsewhere (`ingest_rows`). Both paths run the same seeded batches here - new devices, redeliveries and stale
seqs, health coming and going, alerts opening and resolving, command acks and results, usage across bucket
edges, logins - on the same database, each in a transaction rolled back afterwards, and every table they
touch must hold the same rows, compared as the stored values (text, integers), not as what SQLAlchemy reads
back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.app import create_app
from fleet.domain import wire
from fleet.domain.clock import FakeClock, as_utc
from fleet.domain.device_state import DeviceState
from fleet.domain.health import Thresholds
from fleet.persistence import ingest_repo, ingest_rows
from fleet.persistence.ingest_repo import DeviceRef, Inbound, Rejected
from fleet.persistence.models import Base, Device, Room, School
from fleet.persistence.models_mqtt import DeviceCommand
from fleet.persistence.models_mqtt import DeviceState as DeviceStateRow
from tests.conftest import Api, make_settings
from tests.csvgen import delivery_csv
from tests.factories import build_world

TABLES = (
    "device_state",
    "usage_bytes",
    "usage_active",
    "usage_screen",
    "presence_transitions",
    "alerts",
    "device_commands",
    "dead_letters",
)
KEY = "parity-key"
START = datetime(2026, 9, 7, 7, 58, 30, tzinfo=UTC)  # crosses the 08:00 hour and several 5-minute edges
USERS = ["student-0001", "student-0002", "teacher-7"]
CHANNEL = {
    wire.Telemetry: wire.Channel.TELEMETRY,
    wire.Heartbeat: wire.Channel.HEARTBEAT,
    wire.Event: wire.Channel.EVENT,
    wire.Status: wire.Channel.STATUS,
    wire.Ack: wire.Channel.ACK,
    wire.Result: wire.Channel.RESULT,
}


@dataclass
class Batch:
    now: datetime
    items: list[Inbound]
    rejected: list[Rejected]


def expected_offline(ref: DeviceRef, at: datetime) -> bool:
    return (ref.device_id + at.minute) % 3 == 0


async def _devices(api: Api) -> list[DeviceRef]:
    """30 devices through the API's delivery import; refs as the ingest directory would build them."""
    await build_world(api)
    r = await api.client.post(
        "/api/v1/imports/devices",
        files={"file": ("d.csv", delivery_csv(28), "text/csv")},
        headers=await api.admin(),
    )
    assert r.status_code == 201, r.text
    async with api.sessions() as s:
        rows = (
            await s.execute(
                select(Device.id, Device.school_id, Device.room_id, School.code, Room.kind)
                .join(School, School.id == Device.school_id)
                .outerjoin(Room, Room.id == Device.room_id)
                .order_by(Device.id)
            )
        ).all()
    faulty = Thresholds(fault_error_codes=("E42",), reboot_count=2)
    return [
        DeviceRef(
            dev,
            school,
            None if i % 5 == 0 else room,  # some not placed in a room: usage lands in room 0
            code,
            f"dev-{dev}",
            False,
            "LT-100",
            "terminal",
            kind,
            faulty if i % 4 == 0 else Thresholds(),
        )
        for i, (dev, school, room, code, kind) in enumerate(rows)
    ]


async def _commands(
    sessions: async_sessionmaker[AsyncSession], refs: list[DeviceRef]
) -> dict[int, list[str]]:
    """Two sent commands per device, for acks and results to find."""
    out: dict[int, list[str]] = {}
    async with sessions() as s:
        for ref in refs:
            out[ref.device_id] = []
            for k in range(2):
                cid = f"cmd-{ref.device_id}-{k}"
                out[ref.device_id].append(cid)
                s.add(
                    DeviceCommand(
                        correlation_id=cid,
                        batch_id=f"b-{ref.device_id}",
                        target_kind="device",
                        target_id=ref.device_id,
                        device_id=ref.device_id,
                        school_id=ref.school_id,
                        name="reboot" if k else "lock_screen",
                        args={},
                        status="sent",
                        created_by="parity",
                        created_at=START - timedelta(minutes=5),
                        expires_at=START + timedelta(hours=2),
                        timeout_seconds=60,
                        sent_at=START - timedelta(minutes=4, microseconds=123),
                    )
                )
        await s.commit()
    return out


def _batches(refs: list[DeviceRef], commands: dict[int, list[str]], seed: int) -> list[Batch]:
    rng = random.Random(seed)
    seqs = dict.fromkeys((r.device_id for r in refs), 0)
    now = START
    batches = []
    for _ in range(14):
        now += timedelta(seconds=rng.choice([7, 45, 130, 290, 301, 600]), microseconds=rng.randrange(10**6))
        items: list[Inbound] = []
        for ref in rng.sample(refs, k=rng.randrange(len(refs) // 2, len(refs))):
            for _ in range(rng.randrange(1, 5)):
                at = now - timedelta(milliseconds=rng.choice([0, 0, 1, 250, 2_999]))
                items.append(Inbound(ref, *_message(rng, ref, seqs, commands, at), at))
        rng.shuffle(items)  # arrival order across devices is arbitrary
        rejected = [
            Rejected(now, "bad_payload", "labfleet/v1/x/y/telemetry", "dev-x", b"{", 1, "not JSON")
            for _ in range(rng.randrange(0, 3))
        ]
        batches.append(Batch(now, items, rejected))
    return batches


def _message(
    rng: random.Random, ref: DeviceRef, seqs: dict[int, int], commands: dict[int, list[str]], at: datetime
) -> tuple[wire.Channel, wire.Uplink]:
    dev = ref.device_id
    roll = rng.random()

    def seq() -> int:
        r = rng.random()
        if r < 0.12 and seqs[dev] > 0:
            return seqs[dev] - rng.randrange(0, 3)  # redelivery or reordered
        if r < 0.16 and seqs[dev] > 70:
            return seqs[dev] - 70  # older than the window
        seqs[dev] += 80 if r > 0.97 else 1  # now and then a jump past the window
        return seqs[dev]

    ts = int(at.timestamp() * 1000)
    v: wire.Uplink
    if roll < 0.5:
        v = wire.Telemetry(
            seq=seq(),
            ts_ms=ts,
            battery_pct=rng.choice([None, 3, 15, 50, 90]),
            charging=rng.choice([None, False, True]),
            temperature_c=rng.choice([None, 35.5, 62.25, 80.0]),
            storage_used_pct=rng.choice([None, 40.0, 95.5]),
            firmware=rng.choice([None, "2.4.1", "2.5.0"]),
            app=rng.choice([None, "math", "reader"]),
            bytes_up=rng.choice([0, 120, 5_000]),
            bytes_down=rng.choice([0, 900, 80_000]),
            rssi_dbm=rng.choice([None, -55, -80]),
        )
    elif roll < 0.6:
        v = wire.Heartbeat(seq=seq(), ts_ms=ts, rssi_dbm=rng.choice([None, -60]))
    elif roll < 0.75:
        # screen_session three times as often as each other kind: terminal-days summing several sessions.
        kind = rng.choice([*wire.EventType, wire.EventType.SCREEN_SESSION, wire.EventType.SCREEN_SESSION])
        ev_ts = ts - rng.randrange(0, 600_000)
        v = wire.Event(
            seq=seq(),
            ts_ms=ev_ts,
            type=kind,
            code=rng.choice(["E1", "E42"]) if kind == wire.EventType.ERROR else None,
            user=rng.choice(USERS) if kind == wire.EventType.LOGIN else None,
            screen=_screen(rng, ev_ts) if kind == wire.EventType.SCREEN_SESSION else None,
        )
    elif roll < 0.87:
        v = wire.Status(rng.random() < 0.4, reason=rng.choice([None, "lwt", "shutdown"]))
    elif roll < 0.94:
        v = wire.Ack(
            id=rng.choice([*commands[dev], "unknown"]), ts_ms=ts, accepted=rng.random() < 0.7, reason="busy"
        )
    else:
        v = wire.Result(
            id=rng.choice(commands[dev]), ts_ms=ts, ok=rng.random() < 0.6, code="E", detail={"took_ms": 12}
        )
    return CHANNEL[type(v)], v


def _screen(rng: random.Random, ts: int) -> wire.ScreenSession:
    """A session ending at ts; started before or after midnight UTC, so two local days get rows."""
    use_s = rng.choice([60, 1800, 2400, 2401, 5000])
    start = ts - 1000 * use_s - rng.choice([0, 30_000, 9 * 3_600_000])
    limits = rng.choice([(None, None), (40, 90), (45, 120)])
    return wire.ScreenSession(start, use_s, rng.choice(list(wire.ScreenEnd)), *limits)


async def _run(
    sessions: async_sessionmaker[AsyncSession], batches: list[Batch], fast: bool
) -> tuple[dict[str, list[dict[str, Any]]], list[ingest_repo.BatchOutcome]]:
    """Apply every batch on one path, read the stored rows raw, and roll back."""
    outcomes = []
    async with sessions() as s:
        for b in batches:
            outcomes.append(
                await ingest_repo.apply_batch(
                    s,
                    b.items,
                    b.rejected,
                    now=b.now,
                    pseudonym_key=KEY,
                    expected_offline=expected_offline,
                    dead_letters_max=25,
                    driver_fast_path=fast,
                )
            )
        conn = await s.connection()
        rows = {}
        for t in TABLES:
            res = await conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY 1")
            keys = list(res.keys())
            rows[t] = [dict(zip(keys, r, strict=True)) for r in res.all()]
        await s.rollback()
    return rows, outcomes


async def test_the_sqlite_driver_path_and_the_sqlalchemy_path_store_the_same_rows(api: Api) -> None:
    refs = await _devices(api)
    commands = await _commands(api.sessions, refs)
    for seed in (1, 2, 3):
        batches = _batches(refs, commands, seed)
        fast_rows, fast_out = await _run(api.sessions, batches, fast=True)
        sa_rows, sa_out = await _run(api.sessions, batches, fast=False)
        for t in TABLES:
            assert fast_rows[t] == sa_rows[t], (seed, t)
        assert fast_out == sa_out, seed

        # The batch set exercised what it claims to (a generator change cannot quietly drop a case).
        alerts = sa_rows["alerts"]
        assert {a["rule"] for a in alerts} >= {"unexpected_offline", "battery_low", "error_code"}, seed
        assert {a["status"] for a in alerts} == {"open", "resolved"}, seed
        assert {c["status"] for c in sa_rows["device_commands"]} >= {
            "acked",
            "rejected",
            "succeeded",
            "failed",
        }
        assert {p["online"] for p in sa_rows["presence_transitions"]} == {0, 1}, seed
        assert len({u["bucket_start"] for u in sa_rows["usage_bytes"]}) >= 3, seed  # several 5-minute buckets
        assert len({u["bucket_start"] for u in sa_rows["usage_active"]}) >= 2, seed  # 07:00 and 08:00 on
        screen = sa_rows["usage_screen"]  # terminal-days summed over several sessions, two local days
        assert len({u["day"] for u in screen}) == 2 and any(u["sessions"] > 1 for u in screen), seed
        assert sum(o.duplicates for o in sa_out) > 0 and sum(o.new for o in sa_out) > 0, seed
        assert len(sa_rows["dead_letters"]) <= 25, seed

        # Logins are kept as keyed pseudonyms only.
        stored = repr(sa_rows)
        assert not any(u in stored for u in USERS), seed
        assert any(ingest_repo.pseudonym(KEY, u) in stored for u in USERS), seed


async def test_a_device_state_row_read_back_through_sqlalchemy_matches_the_driver_form(api: Api) -> None:
    """The stored forms the driver path writes are the ones SQLAlchemy reads as the same typed values."""
    refs = await _devices(api)
    commands = await _commands(api.sessions, refs)
    batches = _batches(refs, commands, 9)
    async with api.sessions() as s:
        for b in batches:
            await ingest_repo.apply_batch(
                s, b.items, b.rejected, now=b.now, pseudonym_key=KEY, expected_offline=expected_offline,
                dead_letters_max=25, driver_fast_path=True,
            )  # fmt: skip
        fast = await ingest_rows.load_states(s, [r.device_id for r in refs], fast=True)
        typed = await ingest_rows.load_states(s, [r.device_id for r in refs], fast=False)
        await s.rollback()
    assert fast == typed and len(fast) == len(refs)
    assert any(
        st.session_started_at is not None and st.session_started_at.microsecond for st in fast.values()
    )


def test_the_domain_state_has_one_field_per_device_state_column_in_order() -> None:
    """Rows load into DeviceState positionally and save from it positionally (driver path)."""
    assert [c.name for c in DeviceStateRow.__table__.columns] == list(DeviceState._fields)


async def _typed(sessions: async_sessionmaker[AsyncSession], batches: list[Batch]) -> dict[str, list[Any]]:
    """Apply every batch through the default path of this database; read rows back through SQLAlchemy."""
    async with sessions() as s:
        for b in batches:
            await ingest_repo.apply_batch(
                s, b.items, b.rejected, now=b.now, pseudonym_key=KEY, expected_offline=expected_offline,
                dead_letters_max=25,
            )  # fmt: skip
        await s.commit()
        out = {}
        for t in TABLES:
            table = Base.metadata.tables[t]
            rows = (await s.execute(select(table))).mappings().all()
            # Without the surrogate ids: PostgreSQL's ON CONFLICT DO UPDATE spends a sequence value per
            # conflicting row, SQLite does not; compared as multisets of rows.
            out[t] = sorted(
                (
                    {k: as_utc(v) if isinstance(v, datetime) else v for k, v in r.items() if k != "id"}
                    for r in rows
                ),
                key=repr,
            )
    return out


async def test_postgresql_stores_what_the_sqlite_driver_path_stores(api: Api, postgres_url: str) -> None:
    """The same world and batches on PostgreSQL (SQLAlchemy path, FOR UPDATE) and SQLite (driver path)."""
    app = create_app(make_settings(postgres_url), clock=FakeClock(api.clock.now()), migrate=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            pg = Api(client=client, sessions=app.state.fleet.sessions, clock=api.clock)
            refs = await _devices(api)
            assert await _devices(pg) == refs  # same ids on both: fresh databases, same API calls
            commands = await _commands(api.sessions, refs)
            assert await _commands(pg.sessions, refs) == commands
            batches = _batches(refs, commands, 5)
            lite = await _typed(api.sessions, batches)
            post = await _typed(pg.sessions, batches)
    for t in TABLES:
        assert post[t] == lite[t], t
    assert any(r["session_pseudonym"] for r in post["device_state"])
