"""Helpers for the MQTT device-plane tests: a seeded school with devices, external-service checks."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleet.domain.clock import FakeClock
from fleet.persistence.db import create_engine, session_factory
from fleet.persistence.models import BellPeriod, Device, DeviceModel, District, Room, School
from fleet.services import enrollment
from fleet.settings import Settings

# 2026-09-07 is a Monday; 08:30 UTC is inside the first lesson of the seeded bell schedule.
LESSON_TIME = datetime(2026, 9, 7, 8, 30, tzinfo=UTC)


def require_external() -> bool:
    return os.environ.get("LABFLEET_TEST_REQUIRE_EXTERNAL") == "1"


def need_mosquitto() -> str:
    path = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if path is None:
        if require_external():
            pytest.fail("mosquitto is required (LABFLEET_TEST_REQUIRE_EXTERNAL=1) but not installed")
        pytest.skip("mosquitto not installed")
    return path


def need_postgres() -> str:
    url = os.environ.get("LABFLEET_TEST_POSTGRES_URL")
    if not url:
        if require_external():
            pytest.fail("LABFLEET_TEST_POSTGRES_URL is required (LABFLEET_TEST_REQUIRE_EXTERNAL=1)")
        pytest.skip("LABFLEET_TEST_POSTGRES_URL not set")
    return url


@dataclass
class Plane:
    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: FakeClock
    school_id: int
    school_code: str
    room_id: int
    model_id: int
    tmp: Path

    def settings(self, **mqtt: object) -> Settings:
        return Settings(database_url=self.url, mqtt={"topic_prefix": "labfleet", **mqtt})

    async def add_devices(
        self, n: int, prefix: str = "TAB", room: bool = True, school_id: int | None = None
    ) -> list[int]:
        ids = []
        async with self.sessions() as s:
            for i in range(n):
                d = Device(
                    vendor="Acme",
                    serial_number=f"{prefix}-{i:05d}",
                    asset_tag=f"{prefix}-A{i:05d}",
                    model_id=self.model_id,
                    school_id=school_id or self.school_id,
                    room_id=self.room_id if room else None,
                    status="in_service",
                    created_at=self.clock.now(),
                    updated_at=self.clock.now(),
                )
                s.add(d)
                await s.flush()
                ids.append(d.id)
            await s.commit()
        return ids

    async def enroll(self, serials: list[str], *, school_id: int | None = None) -> dict[str, str]:
        """Enroll devices (by serial) with a fresh claim token; returns serial -> password."""
        out = {}
        async with self.sessions() as s:
            tok = await enrollment.create_claim_token(
                s,
                school_id=school_id or self.school_id,
                max_uses=max(1, len(serials)),
                ttl=timedelta(days=1),
                allow_unknown=False,
                label="test",
                actor="test",
                now=self.clock.now(),
            )
            for serial in serials:
                e = await enrollment.enroll(
                    s,
                    claim_token=tok.token,
                    serial_number=serial,
                    vendor="Acme",
                    model_number=None,
                    now=self.clock.now(),
                )
                out[serial] = e.password
            await s.commit()
        return out


async def seed(url: str, tmp: Path) -> Plane:
    engine = create_engine(url)
    sessions = session_factory(engine)
    clock = FakeClock(LESSON_TIME)
    now = clock.now()
    async with sessions() as s:
        d = District(name=f"D-{uuid.uuid4().hex[:6]}", created_at=now)
        s.add(d)
        await s.flush()
        code = f"S{uuid.uuid4().hex[:6]}"
        school = School(
            district_id=d.id, code=code, name="School", uplink_mbps=100, timezone="UTC", created_at=now
        )
        s.add(school)
        await s.flush()
        room = Room(
            school_id=school.id,
            name="Lab 1",
            kind="ai_lab",
            tier="basic_experience",
            capacity=40,
            created_at=now,
        )
        model = DeviceModel(
            vendor="Acme",
            model_number=f"T10-{code}",
            kind="terminal",
            transport="mqtt",
            unit_price=Decimal("300.00"),
            warranty_months=24,
            supplier="Acme",
            profile_key=None,
            created_at=now,
        )
        s.add_all([room, model])
        await s.flush()
        for wd in range(5):  # Monday..Friday, one lesson 08:00-08:45 and one 09:00-09:45
            s.add(
                BellPeriod(
                    school_id=school.id,
                    room_id=None,
                    weekday=wd,
                    name="P1",
                    start_time=time(8, 0),
                    end_time=time(8, 45),
                )
            )
            s.add(
                BellPeriod(
                    school_id=school.id,
                    room_id=None,
                    weekday=wd,
                    name="P2",
                    start_time=time(9, 0),
                    end_time=time(9, 45),
                )
            )
        await s.commit()
        plane = Plane(url, engine, sessions, clock, school.id, code, room.id, model.id, tmp)
    return plane


TS0 = 1_788_764_400_000


async def wait_until(predicate, timeout: float = 8.0) -> None:
    """Poll an async predicate; the bound is a failure deadline, not a timing assertion."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def terminal(port: int, school: str, serial: str, password: str, *, will: bool = True, **kw: object):
    """An aiomqtt client set up the way protocol v1 tells a terminal to connect (persistent session, LWT)."""
    import json

    import aiomqtt

    from fleet.domain import wire

    t = wire.Topics("labfleet")
    lwt = (
        aiomqtt.Will(
            t.topic(school, serial, "status"),
            json.dumps({"v": 1, "state": "offline", "reason": "lwt"}),
            qos=1,
            retain=True,
        )
        if will
        else None
    )
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=serial,
        username=serial,
        password=password,
        clean_session=False,
        will=lwt,
        **kw,
    )


class DroppableTerminal:
    """A paho session with a Last Will, run without a network thread so the test can cut its socket."""

    def __init__(self, client) -> None:
        self.client = client

    def close(self) -> None:
        """Drop the link without DISCONNECT, as a terminal that loses Wi-Fi or power does."""
        self.client.socket().close()


def raw_connect_with_will(port: int, school: str, serial: str, password: str) -> DroppableTerminal:
    """Connect with a Last Will and announce online (QoS 1, retained), as protocol v1 tells a terminal to."""
    import json
    import time

    import paho.mqtt.client as mqtt

    from fleet.domain import wire

    t = wire.Topics("labfleet")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=serial, clean_session=False)
    c.username_pw_set(serial, password)
    c.will_set(
        t.topic(school, serial, "status"),
        json.dumps({"v": 1, "state": "offline", "reason": "lwt"}),
        qos=1,
        retain=True,
    )
    c.connect("127.0.0.1", port, keepalive=60)
    info = c.publish(
        t.topic(school, serial, "status"), json.dumps({"v": 1, "state": "online"}), qos=1, retain=True
    )
    deadline = time.monotonic() + 10  # a failure deadline, not a timing assertion
    while not (c.is_connected() and info.is_published()):
        assert time.monotonic() < deadline, "terminal could not connect and publish"
        c.loop(0.05)
    return DroppableTerminal(c)


class LoadPublisher:
    """paho QoS 1 publishers carrying many device ids over a few connections (the service identity may publish
    anywhere). paho queues while disconnected and resends unacknowledged messages after a reconnect."""

    def __init__(self, port: int, username: str, password: str, connections: int = 4) -> None:
        import threading

        import paho.mqtt.client as mqtt

        self._lock = threading.Lock()
        self.acked = 0
        self.sent = 0
        self.clients = []
        for i in range(connections):
            c = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=f"loadgen-{port}-{i}", clean_session=False
            )
            c.username_pw_set(username, password)
            c.max_inflight_messages_set(2000)
            c.max_queued_messages_set(0)
            c.reconnect_delay_set(0.1, 1)
            c.on_publish = self._on_publish
            c.connect("127.0.0.1", port, keepalive=30)
            c.loop_start()
            self.clients.append(c)

    def _on_publish(self, *_args: object) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, topic: str, payload: bytes) -> None:
        self.clients[self.sent % len(self.clients)].publish(topic, payload, qos=1)
        self.sent += 1

    def wait_acked(self, timeout: float = 60.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while self.acked < self.sent:
            if time.monotonic() > deadline:
                raise AssertionError(f"publisher: {self.acked} of {self.sent} acknowledged")
            time.sleep(0.02)

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()
            c.loop_stop()


def telemetry_stream(school: str, serials: list[str], per_device: int, start_seq: int = 1):
    """(topic, payload) for per_device telemetry messages of each device, seq start_seq.., 10 bytes up
    each."""
    import json

    from fleet.domain import wire

    t = wire.Topics("labfleet")
    for k in range(per_device):
        seq = start_seq + k
        for s in serials:
            yield (
                t.topic(school, s, "telemetry"),
                json.dumps(
                    {"v": 1, "seq": seq, "ts": TS0 + seq, "battery": 80, "up": 10, "down": 20}
                ).encode(),
            )


async def totals(sessions) -> dict[str, int]:
    from sqlalchemy import func, select

    from fleet.persistence.models_mqtt import DeviceState

    async with sessions() as s:
        row = (
            await s.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(DeviceState.messages_total), 0),
                    func.coalesce(func.sum(DeviceState.duplicates_total), 0),
                    func.coalesce(func.sum(DeviceState.bytes_up_total), 0),
                    func.coalesce(func.min(DeviceState.last_seq), 0),
                    func.coalesce(func.max(DeviceState.messages_total), 0),
                )
            )
        ).one()
    return {
        "devices": row[0],
        "ingested": int(row[1]),
        "duplicates": int(row[2]),
        "bytes_up": int(row[3]),
        "min_last_seq": int(row[4]),
        "max_messages": int(row[5]),
    }
