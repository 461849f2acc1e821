"""Credential rotation over MQTT end to end, on the embedded broker and on managed mosquitto
(docs/protocol-mqtt.md 8.1): the new password arrives on the device's cmd topic, the device acks, its old
password stops and its session ends; a device that never acks keeps its old password until the grace period
ends. The device side is simulators/terminal/credentials.py, as in the district simulator's terminals."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import aiomqtt
import pytest
from sqlalchemy import select

from fleet.domain import credentials, wire
from fleet.domain.permissions import SYSTEM
from fleet.persistence.models import AuditEntry
from fleet.persistence.models_mqtt import DeviceCommand, DeviceCredential
from fleet.runtime.brokers import free_port
from fleet.runtime.plane import DevicePlane
from fleet.services import credential_rotation
from simulators.terminal.credentials import CredentialStore
from tests.mqtt.mqtt_plane import TS0, Plane, need_mosquitto, terminal, wait_until

T = wire.Topics("labfleet")
SERIAL = "TAB-00000"


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


async def _enrolled(plane: Plane, rt: DevicePlane) -> str:
    await plane.add_devices(1)
    pw = (await plane.enroll([SERIAL]))[SERIAL]
    await rt.credentials_changed(SERIAL)
    return pw


async def _can_connect(rt: DevicePlane, school: str, password: str) -> bool:
    try:
        async with terminal(rt.settings.mqtt.listen_port, school, SERIAL, password, will=False, timeout=3):
            return True
    except aiomqtt.MqttError:
        return False


async def _online_and_rotation(
    plane: Plane, rt: DevicePlane, c: aiomqtt.Client, grace: timedelta
) -> wire.Command:
    """Subscribe, say online, start a school rotation and return the rotate command the terminal gets."""
    school = plane.school_code
    await c.subscribe(T.topic(school, SERIAL, "cmd"), qos=1)
    await c.publish(T.topic(school, SERIAL, "heartbeat"), json.dumps({"v": 1, "seq": 1, "ts": TS0}), qos=1)
    await wait_until(lambda: _online(rt))
    async with plane.sessions() as s:
        started = await credential_rotation.start(
            s, SYSTEM, plane.clock, school_id=plane.school_id, grace=grace, plane=rt
        )
        await s.commit()
    assert started.devices == 1
    rt.wake_dispatcher()
    async with asyncio.timeout(8):
        async for msg in c.messages:
            if str(msg.topic) != T.topic(school, SERIAL, "cmd"):
                continue  # amqtt re-delivers the session's own retained status; a terminal ignores it
            got = wire.decode_downlink(bytes(msg.payload))
            assert isinstance(got, wire.Command)
            assert got.name is wire.CommandName.ROTATE_CREDENTIALS
            return got
    raise AssertionError("no command")


async def _online(rt: DevicePlane) -> bool:
    return any(rt.online.values())


async def _credential(plane: Plane) -> DeviceCredential:
    async with plane.sessions() as s:
        return (await s.execute(select(DeviceCredential))).scalar_one()


async def _session_ends(c: aiomqtt.Client, school: str) -> None:
    """Publish until the broker drops the session (it was opened with the old password)."""
    with pytest.raises(aiomqtt.MqttError):
        async with asyncio.timeout(6):
            seq = 10
            while True:
                seq += 1
                await c.publish(
                    T.topic(school, SERIAL, "heartbeat"),
                    json.dumps({"v": 1, "seq": seq, "ts": TS0}),
                    qos=1,
                    timeout=1,
                )
                await asyncio.sleep(0.1)


async def test_acked_rotation_retires_the_old_password_and_the_terminal_reconnects(
    plane: Plane, plane_rt: DevicePlane, caplog: pytest.LogCaptureFixture
) -> None:
    # The service's own loggers at their most talkative, everything else at the default INFO.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="fleet")
    old = await _enrolled(plane, plane_rt)
    school = plane.school_code
    store = CredentialStore(old)
    async with terminal(plane_rt.settings.mqtt.listen_port, school, SERIAL, old) as c:
        cmd = await _online_and_rotation(plane, plane_rt, c, timedelta(hours=24))
        new, grace_until = wire.parse_rotation(cmd.args)
        assert new != old and grace_until > TS0
        # Only the hash is stored, and the command row holds no password.
        cred = await _credential(plane)
        assert cred.pending_hash is not None and credentials.verify_password(new, cred.pending_hash)
        async with plane.sessions() as s:
            row = (await s.execute(select(DeviceCommand))).scalar_one()
        assert row.args == {} and new not in json.dumps(row.args)
        ack = store.on_rotate(cmd, TS0)
        assert ack.accepted and store.candidates() == [new, old]
        await c.publish(T.topic(school, SERIAL, "ack"), wire.encode_uplink(ack), qos=1)
        # The service retires the old password on the ack and ends the session opened with it.
        await _session_ends(c, school)
    assert not await _can_connect(plane_rt, school, old)
    # The terminal reconnects with its new password and reports the rotation done.
    async with terminal(plane_rt.settings.mqtt.listen_port, school, SERIAL, new, will=False) as c:
        result = store.connected_with(new, TS0)
        assert result is not None and store.candidates() == [new]
        await c.publish(T.topic(school, SERIAL, "result"), wire.encode_uplink(result), qos=1)

        async def succeeded() -> bool:
            async with plane.sessions() as s:
                return (await s.execute(select(DeviceCommand.status))).scalar_one() == "succeeded"

        await wait_until(succeeded)
    cred = await _credential(plane)
    assert credentials.verify_password(new, cred.password_hash)
    assert cred.pending_hash is None and cred.rotation_command_id is None
    async with plane.sessions() as s:
        audit = (await s.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().all()
    actions = [a.action for a in audit]
    assert "credentials.rotation_start" in actions and "credentials.rotated" in actions
    assert '"acked"' in json.dumps([a.after for a in audit])
    for text in (caplog.text, json.dumps([(a.after, a.summary) for a in audit])):
        assert new not in text and old not in text


async def test_a_terminal_that_never_acks_keeps_its_old_password_until_the_grace_period_ends(
    plane: Plane, plane_rt: DevicePlane
) -> None:
    old = await _enrolled(plane, plane_rt)
    school = plane.school_code
    async with terminal(plane_rt.settings.mqtt.listen_port, school, SERIAL, old) as c:
        cmd = await _online_and_rotation(plane, plane_rt, c, timedelta(hours=1))
        new, _ = wire.parse_rotation(cmd.args)
    # No ack: a settle pass changes nothing, the old password still opens a session.
    await plane_rt.settle_rotations()
    assert await _can_connect(plane_rt, school, old)
    # The embedded broker takes both during the grace period; mosquitto keeps one password per client, so
    # there the new one takes over when the rotation settles (protocol 8.1).
    assert await _can_connect(plane_rt, school, new) is (plane_rt.settings.mqtt.broker == "embedded")
    plane.clock.advance(3600 + 1)
    done = await plane_rt.settle_rotations()
    assert done.retired == [SERIAL]
    assert not await _can_connect(plane_rt, school, old)
    assert await _can_connect(plane_rt, school, new)
    async with plane.sessions() as s:
        audit = (
            await s.execute(select(AuditEntry).where(AuditEntry.action == "credentials.rotated"))
        ).scalar_one()
    assert audit.after == {"outcome": "grace_ended"}


async def test_a_refused_rotation_keeps_the_old_password(plane: Plane, plane_rt: DevicePlane) -> None:
    old = await _enrolled(plane, plane_rt)
    school = plane.school_code
    async with terminal(plane_rt.settings.mqtt.listen_port, school, SERIAL, old) as c:
        cmd = await _online_and_rotation(plane, plane_rt, c, timedelta(hours=1))
        new, _ = wire.parse_rotation(cmd.args)
        await c.publish(
            T.topic(school, SERIAL, "ack"),
            wire.encode_uplink(wire.Ack(cmd.id, TS0, False, "no_storage")),
            qos=1,
        )

        async def settled() -> bool:
            return (await _credential(plane)).rotation_command_id is None

        await wait_until(settled)

    async def new_refused() -> bool:  # the broker reloads right after the settle pass commits
        return not await _can_connect(plane_rt, school, new)

    await wait_until(new_refused)
    assert await _can_connect(plane_rt, school, old)
    async with plane.sessions() as s:
        audit = (
            await s.execute(select(AuditEntry).where(AuditEntry.action == "credentials.rotation_lapsed"))
        ).scalar_one()
    assert audit.after == {"outcome": "refused"}
