"""Retention on a hand-worked fixture, on SQLite and PostgreSQL: per table, the row just past its age goes,
the row just inside (and one exactly at the cutoff) stays, unfinished commands and the audit log always stay;
a dry run counts the same rows and deletes none; the nightly job runs at the configured hour, every day."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from fleet.cli.main import app as cli_app
from fleet.domain.clock import FakeClock
from fleet.persistence.models import AuditEntry
from fleet.persistence.models_mqtt import (
    DeadLetter,
    DeviceCommand,
    PresenceTransition,
    UsageActive,
    UsageBytes,
    UsageConcurrency,
    UsageScreen,
)
from fleet.runtime.retention_job import JOB, RetentionJob, seconds_until
from fleet.services import retention
from fleet.settings import RetentionSettings
from tests.mqtt.mqtt_plane import Plane, seed

NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
DEFAULTS = RetentionSettings()  # usage 730 d, presence 180 d, dead letters 30 d, finished commands 120 d
EXPECTED = {
    "usage_bytes": 1,
    "usage_active": 1,
    "usage_screen": 1,
    "usage_concurrency": 1,
    "presence_transitions": 1,
    "dead_letters": 1,
    "device_commands": 1,
}


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def command(plane: Plane, device: int, n: int, status: str, finished: datetime | None) -> DeviceCommand:
    return DeviceCommand(
        correlation_id=f"c{n}",
        batch_id=f"b{n}",
        target_kind="device",
        target_id=device,
        device_id=device,
        school_id=plane.school_id,
        name="reboot",
        args={},
        status=status,
        created_by="test",
        created_at=ago(400),
        expires_at=ago(399),
        timeout_seconds=60,
        finished_at=finished,
    )


async def fixture(plane: Plane) -> None:
    (device,) = await plane.add_devices(1)
    sid, dev = plane.school_id, device
    async with plane.sessions() as s:
        s.add_all(
            [
                # usage: 730 days kept
                UsageBytes(school_id=sid, room_id=0, bucket_start=ago(731), bytes_up=1, bytes_down=1),  # goes
                UsageBytes(school_id=sid, room_id=0, bucket_start=ago(729), bytes_up=1, bytes_down=1),
                UsageActive(device_id=dev, school_id=sid, bucket_start=ago(800), active_minutes=5),  # goes
                UsageActive(device_id=dev, school_id=sid, bucket_start=ago(1), active_minutes=5),
                UsageScreen(device_id=dev, school_id=sid, day=ago(731).date()),  # goes
                UsageScreen(
                    device_id=dev, school_id=sid, day=ago(730).date()
                ),  # exactly at the cutoff: stays
                UsageConcurrency(
                    school_id=sid, day=ago(1000).date(), period="P1", updated_at=ago(1000)
                ),  # goes
                UsageConcurrency(school_id=sid, day=ago(3).date(), period="P1", updated_at=ago(3)),
                # presence: 180 days
                PresenceTransition(
                    device_id=dev, school_id=sid, at=ago(181), online=True, cause="connect"
                ),  # goes
                PresenceTransition(device_id=dev, school_id=sid, at=ago(179), online=False, cause="lwt"),
                # dead letters: 30 days
                DeadLetter(received_at=ago(31), reason="bad", topic="t", payload_size=0),  # goes
                DeadLetter(received_at=ago(30), reason="bad", topic="t", payload_size=0),  # at the cutoff
                DeadLetter(received_at=ago(29), reason="bad", topic="t", payload_size=0),
                # commands: finished ones, 120 days; queued and sent ones never
                command(plane, dev, 1, "succeeded", ago(121)),  # goes
                command(plane, dev, 2, "expired", ago(119)),
                command(plane, dev, 3, "queued", None),
                command(plane, dev, 4, "sent", None),
                # the audit log is never pruned, however old
                AuditEntry(at=ago(3000), actor="old", action="device.create", object_type="device"),
            ]
        )
        await s.commit()


async def counts(plane: Plane) -> dict[str, int]:
    out = {}
    async with plane.sessions() as s:
        for rule in retention.RULES:
            out[rule.table] = (await s.execute(select(func.count()).select_from(rule.model))).scalar_one()
    return out


@pytest.fixture
async def plane(any_db_url: str, tmp_path: Path):
    p = await seed(any_db_url, tmp_path)
    await fixture(p)
    yield p
    await p.engine.dispose()


async def test_dry_run_counts_and_keeps_then_the_run_deletes_exactly_the_expired_rows(plane: Plane) -> None:
    before = await counts(plane)
    dry = await retention.run(plane.sessions, JOB, DEFAULTS, NOW, dry_run=True)
    assert dry.rows == EXPECTED
    assert await counts(plane) == before

    done = await retention.run(plane.sessions, JOB, DEFAULTS, NOW)
    assert done.rows == EXPECTED
    assert await counts(plane) == {k: before[k] - EXPECTED[k] for k in before}
    async with plane.sessions() as s:
        left = set((await s.execute(select(DeviceCommand.correlation_id))).scalars())
        audit = list((await s.execute(select(AuditEntry.actor, AuditEntry.action))).all())
    assert left == {"c2", "c3", "c4"}
    assert ("old", "device.create") in audit  # the audit log is kept, and the run itself is recorded
    assert (JOB.actor, "retention.run") in audit
    # A second run at the same instant finds nothing.
    assert sum((await retention.run(plane.sessions, JOB, DEFAULTS, NOW)).rows.values()) == 0


async def test_deletes_in_batches_until_none_is_left(plane: Plane) -> None:
    async with plane.sessions() as s:
        s.add_all(
            [DeadLetter(received_at=ago(40), reason="bad", topic="t", payload_size=0) for _ in range(250)]
        )
        await s.commit()
    done = await retention.run(plane.sessions, JOB, RetentionSettings(batch_rows=100), NOW)
    assert done.rows["dead_letters"] == 251
    assert (await counts(plane))["dead_letters"] == 2


async def test_the_nightly_job_runs_at_the_configured_hour_each_day(plane: Plane) -> None:
    clock = FakeClock(datetime(2026, 12, 4, 18, 0, tzinfo=UTC))
    waits: list[float] = []
    runs: list[datetime] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            raise asyncio.CancelledError
        clock.advance(seconds)

    job = RetentionJob(DEFAULTS, plane.sessions, clock, sleep=sleep)
    real_tick = job.tick

    async def tick() -> retention.RetentionResult:
        result = await real_tick()
        runs.append(result.at)
        return result

    job.tick = tick  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await job.run_forever()
    assert waits[:2] == [8 * 3600, 24 * 3600]  # 18:00 -> 02:00, then a day
    assert runs == [datetime(2026, 12, 5, 2, 0, tzinfo=UTC), datetime(2026, 12, 6, 2, 0, tzinfo=UTC)]
    # The first night took the expired rows; the second, the two that were exactly at their cutoff then.
    second = {k: 0 for k in EXPECTED} | {"dead_letters": 1, "usage_screen": 1}
    assert job.last is not None and job.last.rows == second
    assert (await counts(plane))["dead_letters"] == 1


def test_seconds_until_the_next_run() -> None:
    assert seconds_until(datetime(2026, 1, 1, 1, 59, tzinfo=UTC), 2) == 60
    assert seconds_until(datetime(2026, 1, 1, 2, 0, tzinfo=UTC), 2) == 24 * 3600


def test_the_cli_dry_run_prints_every_table(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABFLEET_DATABASE_URL", sqlite_url)
    done = CliRunner().invoke(cli_app, ["retention", "run", "--dry-run"])
    assert done.exit_code == 0, done.output
    for rule in retention.RULES:
        assert rule.table in done.output
