"""Replies that name nothing the service sent, and update states the protocol does not know, are dead-lettered
with their own reason instead of being accepted silently; against real brokers (embedded and mosquitto)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from fleet.domain import wire
from fleet.persistence.models_mqtt import DeadLetter, DeviceCommand
from fleet.runtime.brokers import free_port
from fleet.runtime.plane import DevicePlane
from fleet.runtime.rollouts import MqttUpdateLink
from tests.mqtt.mqtt_plane import Plane, need_mosquitto, terminal, wait_until

T = wire.Topics("labfleet")


@pytest.fixture(params=["embedded", "mosquitto"])
async def plane_rt(request: pytest.FixtureRequest, plane: Plane) -> AsyncIterator[DevicePlane]:
    if request.param == "mosquitto":
        need_mosquitto()
    settings = plane.settings(
        broker=request.param, listen_port=free_port(), data_dir=str(plane.tmp / "mq"), ingest_batch_ms=20
    )
    async with DevicePlane(settings, plane.sessions, plane.clock) as rt:
        assert rt.ingest is not None
        await rt.ingest.wait_connected()
        yield rt


async def _command(plane: Plane, device_id: int, cid: str) -> None:
    now = plane.clock.now()
    async with plane.sessions() as s:
        s.add(
            DeviceCommand(
                correlation_id=cid,
                batch_id=cid,
                target_kind="device",
                target_id=device_id,
                device_id=device_id,
                school_id=plane.school_id,
                name="reboot",
                args={},
                status="sent",
                created_by="test",
                created_at=now,
                expires_at=now + timedelta(hours=1),
                timeout_seconds=60,
                sent_at=now,
            )
        )
        await s.commit()


async def _letters(plane: Plane) -> list[DeadLetter]:
    async with plane.sessions() as s:
        return list((await s.execute(select(DeadLetter).order_by(DeadLetter.id))).scalars())


async def test_acks_and_results_for_ids_never_sent_are_dead_lettered(
    plane: Plane, plane_rt: DevicePlane
) -> None:
    mine, other = await plane.add_devices(2)
    pw = await plane.enroll(["TAB-00000", "TAB-00001"])
    await plane_rt.credentials_changed("TAB-00000")
    await _command(plane, mine, "cmd-mine")
    await _command(plane, other, "cmd-other")  # sent, but to the other device
    ts = int(plane.clock.now().timestamp() * 1000)
    port = plane_rt.settings.mqtt.listen_port
    async with terminal(port, plane.school_code, "TAB-00000", pw["TAB-00000"]) as c:
        ack = T.topic(plane.school_code, "TAB-00000", "ack")
        result = T.topic(plane.school_code, "TAB-00000", "result")
        await c.publish(ack, wire.encode_uplink(wire.Ack("cmd-mine", ts, True)), qos=1)
        await c.publish(ack, wire.encode_uplink(wire.Ack("cmd-never-sent", ts, True)), qos=1)
        await c.publish(result, wire.encode_uplink(wire.Result("cmd-other", ts, True)), qos=1)
        await c.publish(result, wire.encode_uplink(wire.Result("cmd-mine", ts, True)), qos=1)
        await c.publish(ack, wire.encode_uplink(wire.Ack("cmd-mine", ts, True)), qos=1)  # late: no refusal

        async def two_letters() -> bool:
            return len(await _letters(plane)) >= 2

        await wait_until(two_letters)
        await asyncio.sleep(0.3)  # the late ack's batch, which must add nothing
    letters = await _letters(plane)
    assert [(d.reason, d.identity, d.topic.rsplit("/", 1)[1]) for d in letters] == [
        ("unknown_correlation_id", "TAB-00000", "ack"),
        ("unknown_correlation_id", "TAB-00000", "result"),
    ]
    assert json.loads(letters[0].payload)["id"] == "cmd-never-sent"
    assert "cmd-other" in letters[1].detail and "never sent to this device" in letters[1].detail
    async with plane.sessions() as s:
        statuses = dict((await s.execute(select(DeviceCommand.correlation_id, DeviceCommand.status))).all())
    assert statuses == {"cmd-mine": "succeeded", "cmd-other": "sent"}  # the other device's command untouched


async def test_an_update_state_the_protocol_does_not_know_is_dead_lettered(
    plane: Plane, plane_rt: DevicePlane
) -> None:
    await plane.add_devices(1)
    pw = await plane.enroll(["TAB-00000"])
    await plane_rt.credentials_changed("TAB-00000")
    assert plane_rt.address is not None
    link = MqttUpdateLink(plane_rt.address, T, plane.sessions, plane.clock, shared=False)
    task = asyncio.create_task(link.run(), name="test-rollout-link")
    try:
        await asyncio.wait_for(link.connected.wait(), 10)
        ts = int(plane.clock.now().timestamp() * 1000)
        topic = T.topic(plane.school_code, "TAB-00000", "update")
        async with terminal(
            plane_rt.settings.mqtt.listen_port, plane.school_code, "TAB-00000", pw["TAB-00000"]
        ) as c:
            for state in ("exploded", 7):
                body = {"v": 1, "id": "upd-1", "ts": ts, "state": state}
                await c.publish(topic, json.dumps(body), qos=1)

            async def two_letters() -> bool:
                return len(await _letters(plane)) >= 2

            await wait_until(two_letters)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    letters = await _letters(plane)
    assert [(d.reason, d.identity, d.topic) for d in letters] == [
        ("unknown_state", "TAB-00000", topic),
        ("schema", "TAB-00000", topic),  # not a string at all: a schema error, as before
    ]
    assert "'exploded' is not a protocol state" in letters[0].detail
    assert json.loads(letters[0].payload)["state"] == "exploded"
    assert link.rejected == {"unknown_state": 1, "schema": 1}
