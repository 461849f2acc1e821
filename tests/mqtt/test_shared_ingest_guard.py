"""No device can join the ingest workers' shared subscription on the managed mosquitto: its SUBSCRIBE is
refused, and every message of other schools reaches the ingest, while it is connected and after it left
(issue 16: with the acl_file it got SUBACK 0x01, took a share of the stream, and 20 of 40 messages were
lost)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from fleet.domain import wire
from fleet.persistence.models import School
from fleet.runtime.brokers import BrokerAuthority, MosquittoBroker, free_port
from fleet.runtime.ingest import IngestService
from tests.mqtt.mqtt_plane import LoadPublisher, Plane, need_mosquitto, telemetry_stream, terminal, totals

SVC_USER, SVC_PW = "labfleet-service", "svc-share-secret"
T = wire.Topics("labfleet")
OTHER_DEVICES, PER_DEVICE = 20, 10  # 200 messages from the other school per phase
ROGUE = "TAB-00000"
SHARED_FILTER = "$share/ingest/labfleet/v1/+/+/telemetry"


@pytest.fixture
async def mosq(plane: Plane, tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    need_mosquitto()
    settings = plane.settings(
        broker="mosquitto", listen_port=free_port(), data_dir=str(tmp_path / "mq"), service_password=SVC_PW
    )
    async with MosquittoBroker(settings, BrokerAuthority(plane.sessions, T, SVC_USER, SVC_PW)) as broker:
        yield broker


async def _other_school(plane: Plane) -> tuple[int, str]:
    async with plane.sessions() as s:
        here = await s.get(School, plane.school_id)
        assert here is not None
        other = School(
            district_id=here.district_id,
            code=f"S{uuid.uuid4().hex[:6]}",
            name="Other school",
            uplink_mbps=100,
            timezone="UTC",
            created_at=plane.clock.now(),
        )
        s.add(other)
        await s.commit()
        return other.id, other.code


async def _wait_ingested(plane: Plane, want: int) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30  # a failure deadline, not a timing assertion
    while (got := (await totals(plane.sessions))["ingested"]) < want and loop.time() < deadline:
        await asyncio.sleep(0.1)
    return got


async def test_a_device_cannot_join_the_shared_ingest_group_and_no_message_is_lost(
    plane: Plane, mosq: MosquittoBroker
) -> None:
    await plane.add_devices(1)
    rogue_pw = (await plane.enroll([ROGUE]))[ROGUE]
    other_id, other_code = await _other_school(plane)
    await plane.add_devices(OTHER_DEVICES, prefix="OT", school_id=other_id)
    others = [f"OT-{i:05d}" for i in range(OTHER_DEVICES)]
    await plane.enroll(others, school_id=other_id)
    await mosq.sync()

    settings = plane.settings(
        broker="mosquitto", listen_port=mosq.port, service_password=SVC_PW, ingest_batch_ms=20
    )
    workers = [
        IngestService(
            settings, plane.sessions, plane.clock, address=mosq.address, client_id=f"ingest-{i}", shared=True
        )
        for i in (0, 1)
    ]
    pub = await asyncio.to_thread(LoadPublisher, mosq.service_port, SVC_USER, SVC_PW)
    try:
        async with workers[0], workers[1]:
            for w in workers:
                await w.wait_connected()
            # A device with a persistent session asks for the workers' group and for every school's stream.
            async with terminal(mosq.port, plane.school_code, ROGUE, rogue_pw, will=False) as rogue:
                granted = await rogue.subscribe(SHARED_FILTER, qos=1)
                assert [int(getattr(g, "value", g)) for g in granted] == [0x80]
                phase1 = list(telemetry_stream(other_code, others, PER_DEVICE))
                for topic, payload in phase1:
                    pub.publish(topic, payload)
                await asyncio.to_thread(pub.wait_acked)
                assert await _wait_ingested(plane, len(phase1)) == len(phase1)
                with pytest.raises(TimeoutError):  # and it was handed none of them
                    async with asyncio.timeout(0.5):
                        await anext(aiter(rogue.messages))
            # Gone, its session kept by the broker: still no share of the stream.
            phase2 = list(telemetry_stream(other_code, others, PER_DEVICE, start_seq=PER_DEVICE + 1))
            for topic, payload in phase2:
                pub.publish(topic, payload)
            await asyncio.to_thread(pub.wait_acked)
            want = len(phase1) + len(phase2)
            assert await _wait_ingested(plane, want) == want
            assert all(w.stats.new > 0 for w in workers)  # both workers shared the stream
    finally:
        pub.close()
    t = await totals(plane.sessions)
    assert (t["ingested"], t["duplicates"]) == (want, 0)


async def test_a_device_gets_0x87_for_the_shared_group_over_mqtt_5(
    plane: Plane, mosq: MosquittoBroker
) -> None:
    await plane.add_devices(1)
    pw = (await plane.enroll([ROGUE]))[ROGUE]
    await mosq.sync()
    async with aiomqtt.Client(
        "127.0.0.1",
        mosq.port,
        identifier=ROGUE,
        username=ROGUE,
        password=pw,
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as rogue:
        granted = await rogue.subscribe(SHARED_FILTER, qos=1)
    assert [int(getattr(g, "value", g)) for g in granted] == [0x87]
