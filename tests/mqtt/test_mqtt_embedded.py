"""Against the embedded amqtt broker: telemetry to state, ACLs, LWT presence, revocation, dead letters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiomqtt
import pytest
from sqlalchemy import select

from fleet.domain import wire
from fleet.persistence.models_mqtt import DeadLetter, DeviceState
from fleet.runtime.brokers import BrokerAuthority, EmbeddedBroker, free_port
from fleet.runtime.ingest import IngestService
from tests.mqtt.mqtt_plane import Plane

TS = 1_788_764_400_000


@pytest.fixture
async def embedded(plane: Plane) -> AsyncIterator[tuple[EmbeddedBroker, IngestService]]:
    port = free_port()
    settings = plane.settings(listen_port=port, broker="embedded")
    authority = BrokerAuthority(plane.sessions, wire.Topics("labfleet"), "labfleet-service", "svc-secret")
    async with EmbeddedBroker(settings, authority) as broker:
        ingest = IngestService(
            settings,
            plane.sessions,
            plane.clock,
            address=broker.address,
            client_id="ingest-test",
            shared=False,
        )
        async with ingest:
            await ingest.wait_connected()
            yield broker, ingest


def device_client(plane: Plane, port: int, serial: str, password: str, **kw: object) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1", port, identifier=serial, username=serial, password=password, clean_session=False, **kw
    )


async def wait_until(predicate, timeout: float = 5.0) -> None:
    """Poll an async predicate; the bound is a failure deadline, not a timing assertion."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def state_of(plane: Plane, device_id: int) -> DeviceState | None:
    async with plane.sessions() as s:
        return await s.get(DeviceState, device_id)


async def test_telemetry_reaches_latest_state(plane: Plane, embedded) -> None:
    broker, _ingest = embedded
    (dev_id,) = await plane.add_devices(1)
    pw = await plane.enroll(["TAB-00000"])
    await broker.sync()
    topic = wire.Topics("labfleet").topic(plane.school_code, "TAB-00000", "telemetry")
    async with device_client(plane, broker.port, "TAB-00000", pw["TAB-00000"]) as c:
        for seq, batt in ((1, 90), (2, 80)):
            body = {
                "v": 1,
                "seq": seq,
                "ts": TS + seq,
                "battery": batt,
                "temp_c": 35.0,
                "fw": "2.4.1",
                "up": 100,
                "down": 1000,
                "rssi": -50,
            }
            await c.publish(topic, json.dumps(body), qos=1)

        async def done() -> bool:
            st = await state_of(plane, dev_id)
            return st is not None and st.last_seq == 2

        await wait_until(done)
    st = await state_of(plane, dev_id)
    assert st is not None
    assert (st.battery_pct, st.firmware_version, st.bytes_up_total, st.bytes_down_total, st.online) == (
        80,
        "2.4.1",
        200,
        2000,
        True,
    )
    assert st.messages_total == 2 and st.duplicates_total == 0


async def test_bad_payload_and_unknown_device_become_counted_dead_letters(plane: Plane, embedded) -> None:
    broker, ingest = embedded
    await plane.add_devices(1)
    pw = await plane.enroll(["TAB-00000"])
    await broker.sync()
    t = wire.Topics("labfleet")
    async with device_client(plane, broker.port, "TAB-00000", pw["TAB-00000"]) as c:
        await c.publish(t.topic(plane.school_code, "TAB-00000", "telemetry"), b"{not json", qos=1)
        await c.publish(
            t.topic(plane.school_code, "TAB-00000", "telemetry"), b'{"v":1,"seq":"x","ts":1}', qos=1
        )
    # The service identity may publish anywhere: it stands in for a device that is not enrolled.
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier="svc-pub", username="labfleet-service", password="svc-secret"
    ) as svc:
        await svc.publish(
            t.topic(plane.school_code, "GHOST-1", "heartbeat"),
            json.dumps({"v": 1, "seq": 1, "ts": TS}),
            qos=1,
        )

    async def three() -> bool:
        async with plane.sessions() as s:
            return len((await s.execute(select(DeadLetter))).scalars().all()) >= 3

    await wait_until(three)
    async with plane.sessions() as s:
        reasons = sorted(d.reason for d in (await s.execute(select(DeadLetter))).scalars())
    assert reasons == ["malformed_json", "schema", "unknown_device"]
    assert ingest.stats.rejected == 3


@pytest.mark.parametrize("bad_identity", ["TAB+1", "TAB#1", "TAB/1"])
async def test_wildcard_and_slash_identities_cannot_connect(
    plane: Plane, embedded, bad_identity: str
) -> None:
    broker, _ = embedded
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier=bad_identity, username=bad_identity, password="x", timeout=3
        ):
            pass


async def test_acl_matrix_device_limited_to_its_own_topics(plane: Plane, embedded) -> None:
    broker, _ = embedded
    await plane.add_devices(2)
    pw = await plane.enroll(["TAB-00000", "TAB-00001"])
    await broker.sync()
    t = wire.Topics("labfleet")
    a = broker.authority
    own = t.topic(plane.school_code, "TAB-00000", "telemetry")
    other = t.topic(plane.school_code, "TAB-00001", "telemetry")
    from fleet.domain.acl import Action

    assert a.allowed("TAB-00000", own, Action.PUBLISH)
    assert not a.allowed("TAB-00000", other, Action.PUBLISH)
    assert not a.allowed("TAB-00000", t.topic(plane.school_code, "TAB-00000", "cmd"), Action.PUBLISH)
    assert a.allowed("TAB-00000", t.topic(plane.school_code, "TAB-00000", "cmd"), Action.SUBSCRIBE)
    for filt in (
        "#",
        f"labfleet/v1/{plane.school_code}/+/cmd",
        f"labfleet/v1/{plane.school_code}/TAB-00000/#",
        t.topic(plane.school_code, "TAB-00001", "cmd"),
    ):
        assert not a.allowed("TAB-00000", filt, Action.SUBSCRIBE), filt
    # Over the wire: the device's publish to another device's topic never reaches a subscriber there.
    async with aiomqtt.Client(
        "127.0.0.1", broker.port, identifier="svc-sub", username="labfleet-service", password="svc-secret"
    ) as svc:
        await svc.subscribe("labfleet/#", qos=1)
        async with device_client(plane, broker.port, "TAB-00000", pw["TAB-00000"]) as dev:
            await dev.publish(other, b'{"v":1}', qos=1)
            await dev.publish(own, b'{"v":1,"marker":1}', qos=1)
        got = []
        async with asyncio.timeout(5):
            async for msg in svc.messages:
                got.append(str(msg.topic))
                if str(msg.topic) == own:
                    break
        assert other not in got
    # Wrong password is refused.
    with pytest.raises(aiomqtt.MqttError):
        async with device_client(plane, broker.port, "TAB-00000", "wrong", timeout=3):
            pass
