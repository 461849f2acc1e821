"""The device plane end to end against real brokers (embedded amqtt, and mosquitto when installed):
enrollment, presence through LWT, revocation, command round trip and queued delivery on reconnect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import aiomqtt
import pytest
from sqlalchemy import select

from fleet.domain import wire
from fleet.errors import Conflict, NotFound, Unauthenticated
from fleet.persistence.models import Device
from fleet.persistence.models_mqtt import Alert, DeviceCommand, DeviceState, PresenceTransition
from fleet.runtime.brokers import free_port
from fleet.runtime.plane import DevicePlane
from fleet.services import commands, enrollment
from tests.mqtt.mqtt_plane import TS0, Plane, need_mosquitto, raw_connect_with_will, terminal, wait_until

T = wire.Topics("labfleet")


@pytest.fixture(params=["embedded", "mosquitto"])
async def plane_rt(request: pytest.FixtureRequest, plane: Plane) -> AsyncIterator[DevicePlane]:
    if request.param == "mosquitto":
        need_mosquitto()
    port = free_port()
    settings = plane.settings(
        broker=request.param, listen_port=port, data_dir=str(plane.tmp / "mq"), ingest_batch_ms=20
    )
    async with DevicePlane(settings, plane.sessions, plane.clock) as rt:
        assert rt.ingest is not None
        await rt.ingest.wait_connected()
        yield rt


async def _state(plane: Plane, dev: int) -> DeviceState | None:
    async with plane.sessions() as s:
        return await s.get(DeviceState, dev)


async def _enroll_one(plane: Plane, rt: DevicePlane, serial: str = "TAB-00000") -> tuple[int, str]:
    (dev,) = await plane.add_devices(1)
    pw = await plane.enroll([serial])
    await rt.credentials_changed(serial)
    return dev, pw[serial]


async def test_enrollment_good_expired_exhausted_and_wrong_school(
    plane: Plane, plane_rt: DevicePlane
) -> None:
    await plane.add_devices(3)
    now = plane.clock.now()
    async with plane.sessions() as s:
        good = await enrollment.create_claim_token(
            s,
            school_id=plane.school_id,
            max_uses=1,
            ttl=timedelta(hours=1),
            allow_unknown=False,
            label="",
            actor="t",
            now=now,
        )
        short = await enrollment.create_claim_token(
            s,
            school_id=plane.school_id,
            max_uses=5,
            ttl=timedelta(minutes=1),
            allow_unknown=False,
            label="",
            actor="t",
            now=now,
        )
        await s.commit()
    async with plane.sessions() as s:
        e = await enrollment.enroll(
            s, claim_token=good.token, serial_number="TAB-00000", vendor="Acme", model_number=None, now=now
        )
        await s.commit()
    await plane_rt.credentials_changed("TAB-00000")
    # The issued credentials work on the real broker.
    async with terminal(plane_rt.settings.mqtt.listen_port, plane.school_code, "TAB-00000", e.password):
        pass
    async with plane.sessions() as s:
        with pytest.raises(Unauthenticated) as exhausted:
            await enrollment.enroll(
                s, claim_token=good.token, serial_number="TAB-00001", vendor=None, model_number=None, now=now
            )
        assert exhausted.value.details["reason"] == "exhausted_token"
        with pytest.raises(Unauthenticated) as expired:
            await enrollment.enroll(
                s,
                claim_token=short.token,
                serial_number="TAB-00001",
                vendor=None,
                model_number=None,
                now=now + timedelta(minutes=2),
            )
        assert expired.value.details["reason"] == "expired_token"
        with pytest.raises(Unauthenticated):
            await enrollment.enroll(
                s,
                claim_token=good.token[:-2] + "xx",
                serial_number="TAB-00001",
                vendor=None,
                model_number=None,
                now=now,
            )
    # A device of another school cannot be enrolled with this school's token.
    other_school = await _second_school(plane)
    await plane.add_devices(1, prefix="OTH", school_id=other_school)
    async with plane.sessions() as s:
        with pytest.raises(Conflict) as wrong:
            await enrollment.enroll(
                s, claim_token=short.token, serial_number="OTH-00000", vendor=None, model_number=None, now=now
            )
        assert wrong.value.details["reason"] == "wrong_school"
        with pytest.raises(NotFound):
            await enrollment.enroll(
                s, claim_token=short.token, serial_number="NEW-1", vendor=None, model_number=None, now=now
            )


async def _second_school(plane: Plane) -> int:
    from fleet.persistence.models import School

    async with plane.sessions() as s:
        first = await s.get(School, plane.school_id)
        assert first is not None
        other = School(
            district_id=first.district_id,
            code=plane.school_code + "B",
            name="Other",
            uplink_mbps=50,
            timezone="UTC",
            created_at=plane.clock.now(),
        )
        s.add(other)
        await s.commit()
        return other.id


async def test_unknown_device_registered_as_received_when_token_allows(
    plane: Plane, plane_rt: DevicePlane
) -> None:
    now = plane.clock.now()
    async with plane.sessions() as s:
        tok = await enrollment.create_claim_token(
            s,
            school_id=plane.school_id,
            max_uses=2,
            ttl=timedelta(hours=1),
            allow_unknown=True,
            label="",
            actor="t",
            now=now,
        )
        model = (await s.execute(select(Device.model_id))).first()
        from fleet.persistence.models import DeviceModel

        m = await s.get(DeviceModel, plane.model_id)
        assert m is not None
        e = await enrollment.enroll(
            s,
            claim_token=tok.token,
            serial_number="NEW-00001",
            vendor="Acme",
            model_number=m.model_number,
            now=now,
        )
        await s.commit()
        dev = await s.get(Device, e.device_id)
        assert dev is not None and dev.status == "received" and e.created
        del model


async def test_lwt_flips_presence_and_unexpected_offline_alerts(plane: Plane, plane_rt: DevicePlane) -> None:
    dev, pw = await _enroll_one(plane, plane_rt)
    sock = await asyncio.to_thread(
        raw_connect_with_will, plane_rt.settings.mqtt.listen_port, plane.school_code, "TAB-00000", pw
    )

    async def online() -> bool:
        st = await _state(plane, dev)
        return st is not None and st.online

    await wait_until(online)
    sock.close()  # the link drops without DISCONNECT: the broker publishes the Last Will

    async def offline() -> bool:
        st = await _state(plane, dev)
        return st is not None and not st.online

    await wait_until(offline, timeout=15)
    async with plane.sessions() as s:
        trans = (
            (
                await s.execute(
                    select(PresenceTransition)
                    .where(PresenceTransition.device_id == dev)
                    .order_by(PresenceTransition.id)
                )
            )
            .scalars()
            .all()
        )
        alerts = (await s.execute(select(Alert).where(Alert.device_id == dev))).scalars().all()
    assert [(t.online, t.cause) for t in trans] == [(True, "status"), (False, "lwt")]
    # 08:30 on a Monday is inside lesson P1: the offline is unexpected and raises one alert.
    assert trans[-1].expected is False
    assert [(a.rule, a.status) for a in alerts] == [("unexpected_offline", "open")]


async def test_revoked_device_is_disconnected_within_5_s(plane: Plane, plane_rt: DevicePlane) -> None:
    dev, pw = await _enroll_one(plane, plane_rt)
    async with terminal(plane_rt.settings.mqtt.listen_port, plane.school_code, "TAB-00000", pw) as c:
        async with plane.sessions() as s:
            await enrollment.revoke(s, dev, now=plane.clock.now())
            await s.commit()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await plane_rt.credentials_changed("TAB-00000", revoked=True)
        with pytest.raises(aiomqtt.MqttError):
            while loop.time() - started < 5:
                await c.publish(
                    T.topic(plane.school_code, "TAB-00000", "heartbeat"),
                    json.dumps({"v": 1, "seq": 1, "ts": TS0}),
                    qos=1,
                    timeout=1,
                )
                await asyncio.sleep(0.1)
    # and it cannot come back
    with pytest.raises(aiomqtt.MqttError):
        async with terminal(
            plane_rt.settings.mqtt.listen_port, plane.school_code, "TAB-00000", pw, timeout=3
        ):
            pass


async def _run_terminal(
    port: int, school: str, serial: str, pw: str, handled: list[dict], stop: asyncio.Event, seq_start: int = 1
) -> None:
    """A protocol-v1 terminal: online status, then ack + result for each command on its cmd topic."""
    async with terminal(port, school, serial, pw) as c:
        await c.subscribe(T.topic(school, serial, "cmd"), qos=1)
        await c.publish(
            T.topic(school, serial, "status"), json.dumps({"v": 1, "state": "online"}), qos=1, retain=True
        )
        await c.publish(
            T.topic(school, serial, "heartbeat"), json.dumps({"v": 1, "seq": seq_start, "ts": TS0}), qos=1
        )
        async for msg in c.messages:
            if str(msg.topic) != T.topic(school, serial, "cmd"):
                # amqtt 0.12 re-delivers the session's own retained status here; a terminal ignores it
                continue
            body = json.loads(msg.payload)
            handled.append(body)
            await c.publish(
                T.topic(school, serial, "ack"),
                json.dumps({"v": 1, "id": body["id"], "ts": TS0, "accepted": True}),
                qos=1,
            )
            await c.publish(
                T.topic(school, serial, "result"),
                json.dumps({"v": 1, "id": body["id"], "ts": TS0, "ok": True, "detail": {"uptime": 5}}),
                qos=1,
            )
            if stop.is_set():
                return


async def _batch_done(plane: Plane, batch_id: str) -> dict:
    async with plane.sessions() as s:
        return await commands.progress(s, batch_id)


async def test_command_round_trip_and_queued_command_delivered_on_reconnect(
    plane: Plane, plane_rt: DevicePlane
) -> None:
    dev, pw = await _enroll_one(plane, plane_rt)
    handled: list[dict] = []
    stop = asyncio.Event()
    stop.set()  # leave after the first command
    runner = asyncio.create_task(
        _run_terminal(plane_rt.settings.mqtt.listen_port, plane.school_code, "TAB-00000", pw, handled, stop),
        name="terminal",
    )
    async with plane.sessions() as s:
        batch = await commands.create(
            s,
            target_kind="device",
            target_id=dev,
            name="diagnostics",
            args=None,
            ttl=None,
            timeout_s=None,
            actor="tech",
            now=plane.clock.now(),
        )
        await s.commit()
    plane_rt.wake_dispatcher()

    async def finished() -> bool:
        return (await _batch_done(plane, batch.batch_id))["by_status"] == {"succeeded": 1}

    await wait_until(finished)
    await asyncio.wait_for(runner, 5)
    assert handled[0]["cmd"] == "diagnostics" and handled[0]["id"] == batch.commands[0].correlation_id

    # The terminal is gone (clean disconnect + offline status): a new command waits for it.
    async with terminal(
        plane_rt.settings.mqtt.listen_port, plane.school_code, "TAB-00000", pw, will=False
    ) as c:
        await c.publish(
            T.topic(plane.school_code, "TAB-00000", "status"),
            json.dumps({"v": 1, "state": "offline", "reason": "shutdown"}),
            qos=1,
            retain=True,
        )

    async def offline() -> bool:
        st = await _state(plane, dev)
        return st is not None and not st.online

    await wait_until(offline)
    async with plane.sessions() as s:
        queued = await commands.create(
            s,
            target_kind="room",
            target_id=plane.room_id,
            name="set_policy",
            args={"session_minutes": 40, "daily_minutes": 120, "allowed_apps": ["edu.reader"]},
            ttl=timedelta(hours=1),
            timeout_s=60,
            actor="tech",
            now=plane.clock.now(),
        )
        await s.commit()
    # One dispatch pass while the device is offline, run here rather than hoped for from the background loop:
    # it sends nothing and the command stays queued.
    addr = plane_rt.address
    assert addr is not None
    async with aiomqtt.Client(
        addr.host, addr.port, identifier="test-dispatch-pass", username=addr.username, password=addr.password
    ) as publisher:
        assert await plane_rt.dispatch_once(publisher) == 0
    assert (await _batch_done(plane, queued.batch_id))["by_status"] == {"queued": 1}
    handled.clear()
    runner = asyncio.create_task(
        _run_terminal(
            plane_rt.settings.mqtt.listen_port, plane.school_code, "TAB-00000", pw, handled, stop, seq_start=2
        ),
        name="terminal-again",
    )

    async def delivered() -> bool:
        return (await _batch_done(plane, queued.batch_id))["by_status"] == {"succeeded": 1}

    await wait_until(delivered)
    await asyncio.wait_for(runner, 5)
    assert handled[0]["cmd"] == "set_policy" and handled[0]["args"]["daily_minutes"] == 120


async def test_queued_command_expires_after_its_ttl(plane: Plane, plane_rt: DevicePlane) -> None:
    dev, _ = await _enroll_one(plane, plane_rt)
    async with plane.sessions() as s:
        batch = await commands.create(
            s,
            target_kind="device",
            target_id=dev,
            name="reboot",
            args=None,
            ttl=timedelta(seconds=30),
            timeout_s=None,
            actor="tech",
            now=plane.clock.now(),
        )
        await s.commit()
    plane.clock.advance(31)
    plane_rt.wake_dispatcher()

    async def expired() -> bool:
        return (await _batch_done(plane, batch.batch_id))["by_status"] == {"expired": 1}

    await wait_until(expired)
    async with plane.sessions() as s:
        row = (await s.execute(select(DeviceCommand))).scalar_one()
        assert row.sent_at is None
