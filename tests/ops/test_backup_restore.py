"""`labfleet backup` / `labfleet restore` round trip on SQLite and on PostgreSQL: every table equal, the
artifact store equal, the service starts on the restored install, and an enrolled terminal logs in to a real
mosquitto with the password it already had. Plus the refusals: a non-empty target, another format version,
a revision this install does not know."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from fleet.app import create_app
from fleet.cli.main import app as cli_app
from fleet.domain.clock import FakeClock
from fleet.errors import Conflict, InvalidInput
from fleet.persistence.db import create_engine, session_factory, upgrade_sync
from fleet.persistence.schema import metadata
from fleet.runtime import backup as ops
from fleet.runtime.brokers import free_port
from fleet.runtime.plane import DevicePlane
from fleet.settings import Settings
from tests.conftest import off_loop
from tests.mqtt.mqtt_plane import LESSON_TIME, need_mosquitto, seed, terminal

NOW = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
SERIALS = ["TAB-00000", "TAB-00001"]


async def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    engine = create_engine(url)
    out: dict[str, list[tuple[Any, ...]]] = {}
    try:
        async with engine.connect() as conn:
            for table in metadata.sorted_tables:
                rows = (await conn.execute(select(table))).all()
                out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    finally:
        await engine.dispose()
    return out


def cfg(url: str, artifacts: Path, **mqtt: Any) -> Settings:
    return Settings(
        database_url=url,
        rollouts={"artifact_dir": str(artifacts), "url_key": "k" * 32, "signing_key": "very-secret-signing"},
        mqtt={"topic_prefix": "labfleet", "service_password": "service-pw-secret", **mqtt},
    )


async def fresh_postgres(url: str) -> None:
    """The PostgreSQL database as a fresh install leaves it: schema at head, no rows."""
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()
    await asyncio.to_thread(off_loop, lambda: upgrade_sync(url))


@pytest.fixture(params=["sqlite", "postgres"])
def source_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url"))


async def test_round_trip_keeps_every_table_artifacts_and_device_logins(
    source_url: str, tmp_path: Path
) -> None:
    plane = await seed(source_url, tmp_path)
    await plane.add_devices(len(SERIALS))
    passwords = await plane.enroll(SERIALS)
    await plane.engine.dispose()
    src_art = tmp_path / "art-src"
    (src_art / "ab").mkdir(parents=True)
    (src_art / "ab" / "ab12.bin").write_bytes(b"\x00firmware\xff" * 100)
    before = await snapshot(source_url)
    assert before["devices"] and before["device_credentials"] and before["claim_tokens"]

    archive = tmp_path / "out" / "labfleet.tar.gz"
    made = await asyncio.to_thread(ops.backup, cfg(source_url, src_art), archive, now=NOW)
    assert made.artifacts == 1 and made.rows["devices"] == len(SERIALS)
    raw = gzip.decompress(archive.read_bytes())  # the whole tar: manifest, database, artifacts
    assert b"service-pw-secret" in repr(cfg(source_url, src_art)).encode()  # the secrets are set ...
    for secret in (
        b"service-pw-secret",
        b"very-secret-signing",
        b":labfleet@",
        *(p.encode() for p in passwords.values()),
    ):
        assert secret not in raw  # ... and none is in the archive in clear
    summary = ops.read_manifest(archive)["settings"]
    assert summary["mqtt"]["service_password"] == "(set)" and summary["rollouts"]["signing_key"] == "(set)"

    # A fresh install: schema at head, nothing in it.
    if source_url.startswith("sqlite"):
        target_url = f"sqlite+aiosqlite:///{tmp_path / 'restored.db'}"
        await asyncio.to_thread(off_loop, lambda: upgrade_sync(target_url))
    else:
        target_url = source_url
        await fresh_postgres(target_url)
        assert (await snapshot(target_url))["devices"] == []
    dst_art = tmp_path / "art-dst"
    target = cfg(target_url, dst_art)
    done = await asyncio.to_thread(ops.restore, target, archive)
    assert done.artifacts == 1
    assert await snapshot(target_url) == before
    assert (dst_art / "ab" / "ab12.bin").read_bytes() == (src_art / "ab" / "ab12.bin").read_bytes()

    # A second restore onto the now-full target is refused unless forced.
    with pytest.raises(Conflict):
        await asyncio.to_thread(ops.restore, target, archive)
    await asyncio.to_thread(lambda: ops.restore(target, archive, force=True))
    assert await snapshot(target_url) == before

    # The service starts on the restored install and says it is ready.
    api = create_app(target, clock=FakeClock(LESSON_TIME), migrate=False)
    transport = httpx.ASGITransport(app=api)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        assert (await c.get("/readyz")).status_code == 200

    # A terminal logs in to a real mosquitto with the password it had before the backup; a wrong one fails.
    need_mosquitto()
    engine = create_engine(target_url)
    broker = cfg(
        target_url, dst_art, broker="mosquitto", listen_port=free_port(), data_dir=str(tmp_path / "mq")
    )
    try:
        async with DevicePlane(broker, session_factory(engine), FakeClock(LESSON_TIME)):
            port = broker.mqtt.listen_port
            async with terminal(
                port, plane.school_code, SERIALS[0], passwords[SERIALS[0]], will=False, timeout=5
            ):
                pass
            with pytest.raises(aiomqtt.MqttError):
                async with terminal(
                    port, plane.school_code, SERIALS[1], passwords[SERIALS[0]], will=False, timeout=5
                ):
                    pass
    finally:
        await engine.dispose()


def _archive(tmp_path: Path, **manifest: Any) -> Path:
    path = tmp_path / "bad.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        data = json.dumps({"format_version": 1, "dialect": "sqlite", "revision": "0001", **manifest}).encode()
        info = tarfile.TarInfo(ops.MANIFEST)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_restore_refuses_another_format_version_and_an_unknown_revision(
    sqlite_url: str, tmp_path: Path
) -> None:
    target = cfg(sqlite_url, tmp_path / "art")
    with pytest.raises(InvalidInput, match="format version 99"):
        ops.restore(target, _archive(tmp_path, format_version=99))
    with pytest.raises(InvalidInput, match="9999_from_the_future"):
        ops.restore(target, _archive(tmp_path, revision="9999_from_the_future"))
    with pytest.raises(InvalidInput, match="not a LabFleet backup"):
        (tmp_path / "junk.tar.gz").write_bytes(b"junk")
        ops.restore(target, tmp_path / "junk.tar.gz")


def test_the_cli_backs_up_and_refuses_to_restore_over_data(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABFLEET_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("LABFLEET_ROLLOUTS__ARTIFACT_DIR", str(tmp_path / "art"))
    runner = CliRunner()
    out = tmp_path / "b.tar.gz"
    done = runner.invoke(cli_app, ["backup", str(out)])
    assert done.exit_code == 0, done.output
    assert "backup written" in done.output and out.exists()
    # The template database is empty but for its schema: a restore over it is allowed ...
    assert runner.invoke(cli_app, ["restore", str(out)]).exit_code == 0
    # ... and one over a database with rows is not, with a message rather than a traceback.
    seeded = asyncio.run(seed(sqlite_url, tmp_path))
    asyncio.run(seeded.engine.dispose())
    refused = runner.invoke(cli_app, ["restore", str(out)])
    assert refused.exit_code == 1 and "not empty" in refused.output and "Traceback" not in refused.output
    assert runner.invoke(cli_app, ["restore", str(out), "--force"]).exit_code == 0


def test_pg_dump_missing_is_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InvalidInput, match="postgresql-client"):
        ops.pg_tool("pg_dump")
