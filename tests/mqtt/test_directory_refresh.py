"""A device moved to another room counts there from its next message: in the serving process (the API's own
change refreshes the directory as it commits) and in a separate ingest worker (its reference watch sees the
generation the database triggers moved), whoever made the change."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiomqtt
import pytest
from sqlalchemy import func, select, text

from fleet.domain import wire
from fleet.domain.clock import FakeClock
from fleet.persistence.db import create_engine, session_factory
from fleet.persistence.directory import REFERENCE_POLL_S, DeviceDirectory, ReferenceWatch
from fleet.persistence.models_mqtt import UsageBytes
from fleet.persistence.timetables import Timetables
from fleet.runtime.brokers import free_port
from fleet.runtime.ingest import IngestService
from tests.conftest import Api, make_settings
from tests.factories import World, build_world, plane_api, post
from tests.mqtt.mqtt_plane import TS0, terminal, wait_until

V1 = "/api/v1"
TOPICS = wire.Topics("labfleet")
SERIAL = "SN-a-1"


class SteppedSleep:
    """An injected sleep for the watch loop: each pass waits until the test lets it run."""

    def __init__(self) -> None:
        self.steps: asyncio.Queue[None] = asyncio.Queue()
        self.intervals: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.intervals.append(seconds)
        await self.steps.get()

    def step(self) -> None:
        self.steps.put_nowait(None)


async def room_bytes(api: Api) -> dict[int, int]:
    async with api.sessions() as s:
        rows = (
            await s.execute(
                select(UsageBytes.room_id, func.sum(UsageBytes.bytes_up)).group_by(UsageBytes.room_id)
            )
        ).all()
    return {room: int(n) for room, n in rows}


async def enroll_and_second_room(api: Api) -> tuple[World, int, str]:
    w = await build_world(api)
    room2 = await post(api, f"{V1}/rooms", {"school_id": w.school_a, "name": "Lab 2", "kind": "digital_lab"})
    tok = (await post(api, f"{V1}/schools/{w.school_a}/claim-tokens", {"max_uses": 1}))["token"]
    r = await api.client.post(f"{V1}/enroll", json={"claim_token": tok, "serial_number": SERIAL})
    assert r.status_code == 201, r.text
    return w, room2["id"], r.json()["password"]


async def send(client: aiomqtt.Client, seq: int, up: int) -> None:
    payload = wire.encode_uplink(wire.Telemetry(seq=seq, ts_ms=TS0 + seq * 1000, battery_pct=80, bytes_up=up))
    await client.publish(TOPICS.topic("school-a", SERIAL, wire.Channel.TELEMETRY), payload, qos=1)


async def move(api: Api, device_id: int, room_id: int) -> None:
    r = await api.client.patch(
        f"{V1}/devices/{device_id}", json={"room_id": room_id}, headers=await api.admin()
    )
    assert r.status_code == 200, r.text


def test_a_move_is_seen_well_within_ten_seconds() -> None:
    # One poll interval plus one reload (a few ms) is what a separate worker may lag behind.
    assert REFERENCE_POLL_S <= 5.0


@pytest.fixture
async def serving(sqlite_url: str, clock: FakeClock) -> AsyncIterator[Api]:
    settings = make_settings(
        sqlite_url, mqtt={"broker": "embedded", "listen_port": free_port(), "ingest_batch_ms": 20}
    )
    async with plane_api(settings, clock) as api:
        yield api


async def test_a_moved_device_counts_to_its_new_room_in_the_serving_process(serving: Api) -> None:
    api = serving
    w, room2, password = await enroll_and_second_room(api)
    plane = api.client._transport.app.state.fleet.plane
    async with terminal(api.port, "school-a", SERIAL, password) as c:
        await send(c, 1, 1000)
        await wait_until(lambda: bytes_are(api, {w.room_a: 1000}))
        await move(api, w.device_a, room2)
        # Refreshed as the PATCH committed, not at the next poll.
        assert plane.directory.get(SERIAL).room_id == room2
        await send(c, 2, 500)
        await wait_until(lambda: bytes_are(api, {w.room_a: 1000, room2: 500}))


@asynccontextmanager
async def separate_worker(api: Api, sleep: SteppedSleep) -> AsyncIterator[IngestService]:
    """An ingest worker as `labfleet ingest` runs one: its own engine, directory and timetables."""
    app = api.client._transport.app
    state = app.state.fleet
    async with AsyncExitStack() as stack:
        engine = create_engine(state.settings.database_url)
        stack.push_async_callback(engine.dispose)
        worker = IngestService(
            state.settings,
            session_factory(engine),
            state.clock,
            address=state.plane.address,
            client_id="labfleet-ingest-0",
            shared=False,
            reference_sleep=sleep,
        )
        yield await stack.enter_async_context(worker)


@pytest.fixture
async def serving_without_ingest(sqlite_url: str, clock: FakeClock) -> AsyncIterator[Api]:
    settings = make_settings(
        sqlite_url,
        mqtt={
            "broker": "embedded",
            "listen_port": free_port(),
            "ingest_batch_ms": 20,
            "ingest_in_service": False,
        },
    )
    async with plane_api_without_ingest(settings, clock) as api:
        yield api


@asynccontextmanager
async def plane_api_without_ingest(settings, clock):
    import httpx

    from fleet.app import create_app
    from fleet.runtime.plane import device_plane_hook

    app = create_app(settings, clock=clock, migrate=False, runtime_hooks=[device_plane_hook])
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        api = Api(client=client, sessions=app.state.fleet.sessions, clock=clock)
        api.port = settings.mqtt.listen_port
        yield api


async def test_a_moved_device_counts_to_its_new_room_in_a_separate_ingest_worker(
    serving_without_ingest: Api,
) -> None:
    api = serving_without_ingest
    w, room2, password = await enroll_and_second_room(api)
    sleep = SteppedSleep()
    async with (
        separate_worker(api, sleep) as worker,
        terminal(
            api.port,
            "school-a",
            SERIAL,
            password,
        ) as c,
    ):
        await worker.wait_connected()
        await send(c, 1, 1000)
        await wait_until(lambda: bytes_are(api, {w.room_a: 1000}))
        await move(api, w.device_a, room2)
        # The worker heard nothing yet: its copy is the old one until its watch runs.
        assert worker.directory.get(SERIAL).room_id == w.room_a
        reloads = worker.watch.reloads
        sleep.step()  # one pass of the worker's watch loop
        await wait_until(lambda: _true(worker.watch.reloads > reloads))
        assert worker.directory.get(SERIAL).room_id == room2
        assert sleep.intervals[0] == REFERENCE_POLL_S
        await send(c, 2, 500)
        await wait_until(lambda: bytes_are(api, {w.room_a: 1000, room2: 500}))


async def test_the_watch_reloads_after_a_change_made_outside_the_service(
    api_any: Api, any_db_url: str
) -> None:
    """Plain SQL (no ORM, no API) moves the generation through the triggers; unrelated writes do not."""
    w = await build_world(api_any)
    engine = create_engine(any_db_url)
    try:
        sessions = session_factory(engine)
        watch = ReferenceWatch(sessions, DeviceDirectory(sessions, api_any.clock), Timetables(sessions))
        await watch.load()
        assert not await watch.check()

        async def sql(stmt: str, **params: object) -> None:
            async with sessions() as s:
                await s.execute(text(stmt), params)
                await s.commit()

        await sql("UPDATE devices SET status = 'in_service' WHERE id = :d", d=w.device_a)
        assert not await watch.check()  # the status is not held in memory: no reload
        await sql("UPDATE devices SET room_id = NULL WHERE id = :d", d=w.device_a)
        assert await watch.check()
        await sql("DELETE FROM calendar_entries WHERE id = :c", c=w.calendar_b)
        assert await watch.check()
        assert not await watch.check()
    finally:
        await engine.dispose()


async def test_the_watch_loop_checks_once_per_interval(api: Api) -> None:
    await build_world(api)
    sleep = SteppedSleep()
    watch = ReferenceWatch(
        api.sessions, DeviceDirectory(api.sessions, api.clock), Timetables(api.sessions), sleep=sleep
    )
    await watch.load()
    task = asyncio.create_task(watch.run(), name="test-reference-watch")
    try:
        await post(
            api,
            f"{V1}/bell-periods",
            {
                "school_id": (await build_world_school(api)),
                "weekday": 1,
                "name": "P2",
                "start_time": "09:00",
                "end_time": "09:40",
            },
        )
        sleep.step()
        await wait_until(lambda: _true(watch.reloads == 2))
        assert sleep.intervals == [REFERENCE_POLL_S, REFERENCE_POLL_S]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def build_world_school(api: Api) -> int:
    async with api.sessions() as s:
        return int(await s.scalar(text("SELECT min(id) FROM schools")))


async def bytes_are(api: Api, want: dict[int, int]) -> bool:
    return await room_bytes(api) == want


async def _true(value: bool) -> bool:
    return value
