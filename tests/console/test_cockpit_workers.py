"""The scale-out shape: `labfleet serve` without in-service ingest, and a `labfleet ingest` worker process
beside it on mosquitto. The cockpit's live stream, served by the service, still counts a terminal online as it
connects: its figures come from the database, not from the serving process's memory."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.domain import wire
from fleet.runtime.brokers import BrokerAuthority, MosquittoBroker, free_port
from fleet.runtime.plane import device_plane_hook
from tests.conftest import make_settings
from tests.console.conftest import LiveServer, serve
from tests.console.helpers import PASSWORD, add_user
from tests.mqtt.mqtt_plane import TS0, need_mosquitto, seed, terminal

SVC_USER, SVC_PW = "labfleet-service", "svc-cockpit-secret"
# Failure deadlines for a loaded machine, not timing assertions (the 2-second budget is benchmarked).
WORKER_START_S = 60.0
SEEN_ONLINE_S = 30.0


def _spawn_worker(env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """Worker index 7, as `labfleet ingest --index 7` starts it."""
    with log.open("a") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "fleet.runtime.worker", "--index", "7"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )


async def _until(
    client: httpx.AsyncClient, done: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """Read the cockpit stream until an update satisfies `done`; the last update it saw otherwise."""
    last: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout), client.stream("GET", "/cockpit/stream") as r:
            assert r.status_code == 200
            async with contextlib.aclosing(r.aiter_lines()) as lines:
                async for line in lines:
                    if line.startswith("data: ") and line != "data: {}":
                        last = json.loads(line[6:])
                        if done(last):
                            return last
    except TimeoutError:
        pass
    return last


@pytest.fixture
def district(sqlite_template: Path, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    import shutil

    db = tmp_path / "scale-out.db"
    shutil.copy(sqlite_template, db)
    url = f"sqlite+aiosqlite:///{db}"

    async def build() -> Any:
        plane = await seed(url, tmp_path)
        await plane.add_devices(2, prefix="SO")
        passwords = await plane.enroll(["SO-00000", "SO-00001"])
        await add_user(plane.sessions, plane.clock, "it", "it_staff")
        await plane.engine.dispose()
        return plane, passwords

    yield url, asyncio.run(build())


def test_the_cockpit_counts_what_a_separate_ingest_worker_stores(
    district: tuple[str, Any], tmp_path: Path
) -> None:
    need_mosquitto()
    url, (plane, passwords) = district
    mq = make_settings(
        url,
        mqtt={
            "broker": "mosquitto",
            "listen_port": free_port(),
            "topic_prefix": "labfleet",
            "data_dir": str(tmp_path / "mq"),
            "service_password": SVC_PW,
        },
    )

    async def scenario() -> None:
        from fleet.persistence.db import create_engine, session_factory

        engine = create_engine(url)
        authority = BrokerAuthority(session_factory(engine), wire.Topics("labfleet"), SVC_USER, SVC_PW)
        async with MosquittoBroker(mq, authority) as broker:
            settings = make_settings(
                url,
                mqtt={
                    "broker": "external",
                    "url": f"mqtt://127.0.0.1:{broker.service_port}",
                    "service_username": SVC_USER,
                    "service_password": SVC_PW,
                    "topic_prefix": "labfleet",
                    "ingest_in_service": False,
                },
            )
            env = dict(
                os.environ,
                LABFLEET_DATABASE_URL=url,
                LABFLEET_MQTT__BROKER="external",
                LABFLEET_MQTT__URL=f"mqtt://127.0.0.1:{broker.service_port}",
                LABFLEET_MQTT__SERVICE_USERNAME=SVC_USER,
                LABFLEET_MQTT__SERVICE_PASSWORD=SVC_PW,
                LABFLEET_MQTT__TOPIC_PREFIX="labfleet",
                LABFLEET_LOG_LEVEL="WARNING",
            )
            worker = await asyncio.to_thread(_spawn_worker, env, tmp_path / "worker.log")
            try:
                assert worker.stdout is not None
                line = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), WORKER_START_S)
                assert '"connected"' in line, (line, (tmp_path / "worker.log").read_text()[-2000:])
                await asyncio.to_thread(
                    _with_service,
                    settings,
                    mq.mqtt.listen_port,
                    plane.school_code,
                    plane.school_id,
                    passwords,
                )
            finally:
                worker.terminate()
                await asyncio.to_thread(worker.wait, 30)
        await engine.dispose()

    asyncio.run(scenario())


def _with_service(
    settings: Any, device_port: int, school: str, school_id: int, passwords: dict[str, str]
) -> None:
    """The service on its own loop (uvicorn in a thread), a signed-in viewer, and a terminal connecting."""
    gen = serve(settings, [device_plane_hook])
    live: LiveServer = next(gen)
    try:
        plane = live.app.state.fleet.plane
        assert plane is not None and plane.ingest is None  # the service ingests nothing itself

        async def view() -> None:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as c:
                form = await c.get("/signin")
                csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
                r = await c.post(
                    "/signin", data={"csrf": csrf, "username": "it", "password": PASSWORD, "next": "/"}
                )
                assert r.status_code == 303
                first = await _until(c, lambda f: True, SEEN_ONLINE_S)
                assert first["total"]["online"] == "0"
                t = wire.Topics("labfleet")
                async with terminal(device_port, school, "SO-00000", passwords["SO-00000"]) as term:
                    await term.publish(
                        t.topic(school, "SO-00000", "status"),
                        json.dumps({"v": 1, "state": "online"}),
                        qos=1,
                        retain=True,
                    )
                    await term.publish(
                        t.topic(school, "SO-00000", "telemetry"),
                        json.dumps({"v": 1, "seq": 1, "ts": TS0, "battery": 77}),
                        qos=1,
                    )
                    seen = await _until(c, lambda f: f["total"]["online"] == "1", SEEN_ONLINE_S)
                    assert seen.get("total", {}).get("online") == "1", seen
                    assert seen["schools"][str(school_id)]["online"] == "1"
                    # Ingest health: the worker's message, stored in the database (within SLOW_S)...
                    health = await _until(c, lambda f: f["ingest"]["last"] != "—", SEEN_ONLINE_S)
                assert health.get("ingest", {}).get("last", "—") != "—", health
                assert health["ingest"]["state"] == "—"  # ...and no ingest in the serving process
            # httpx's inner byte generators of the two streams close through tasks on this loop: let them run.
            gc.collect()
            await asyncio.sleep(0.1)

        asyncio.run(view())
    finally:
        next(gen, None)
