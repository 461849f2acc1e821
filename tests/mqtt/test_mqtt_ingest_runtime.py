"""The paho ingest subscriber and the metrics the MQTT plane moves: backpressure of the bounded queue, ingest
lag, connects and disconnects by reason (the service's own link and device presence), command duration."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from fleet.domain import wire
from fleet.observability.metrics import FleetMetrics
from fleet.persistence.models_mqtt import DeviceState
from fleet.runtime.brokers import BrokerAuthority, EmbeddedBroker, MosquittoBroker, free_port
from fleet.runtime.ingest import IngestService
from fleet.runtime.plane import DevicePlane
from fleet.services import commands
from tests.mqtt.mqtt_plane import (
    TS0,
    LoadPublisher,
    Plane,
    need_mosquitto,
    raw_connect_with_will,
    telemetry_stream,
    terminal,
    totals,
    wait_until,
)

T = wire.Topics("labfleet")
SVC_USER, SVC_PW = "labfleet-service", "svc-runtime-secret"


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def mosquitto(plane: Plane, tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    need_mosquitto()
    settings = plane.settings(
        broker="mosquitto", listen_port=free_port(), data_dir=str(tmp_path / "mq"), service_password=SVC_PW
    )
    async with MosquittoBroker(settings, BrokerAuthority(plane.sessions, T, SVC_USER, SVC_PW)) as broker:
        yield broker


async def test_full_queue_stops_reading_and_the_broker_holds_the_rest(
    plane: Plane, mosquitto: MosquittoBroker
) -> None:
    await plane.add_devices(50, prefix="BP")
    serials = [f"BP-{i:05d}" for i in range(50)]
    await plane.enroll(serials)
    queue_max = 40
    # The writer never flushes by itself here (huge batch size and interval): the test commits by hand.
    settings = plane.settings(
        broker="mosquitto",
        listen_port=mosquitto.port,
        service_password=SVC_PW,
        ingest_queue_max=queue_max,
        ingest_batch_max=1_000_000,
        ingest_batch_ms=3_600_000,
    )
    stream = list(telemetry_stream(plane.school_code, serials, 6))  # 300 messages
    async with IngestService(
        settings,
        plane.sessions,
        plane.clock,
        address=mosquitto.address,
        client_id="ingest-backpressure",
        shared=False,
    ) as ingest:
        await ingest.wait_connected()
        pub = await asyncio.to_thread(LoadPublisher, mosquitto.port, SVC_USER, SVC_PW, 1)
        try:
            for topic, payload in stream:
                pub.publish(topic, payload)
            await asyncio.to_thread(pub.wait_acked)  # every message is in the broker now
        finally:
            pub.close()
        batches = []
        while ingest.stats.committed < len(stream):

            async def full_or_rest() -> bool:
                return len(ingest._pending) >= min(queue_max, len(stream) - ingest.stats.committed)

            await wait_until(full_or_rest)
            batches.append(len(ingest._pending))
            await ingest.flush()  # commit, ack, and resume reading
    assert max(batches) == queue_max  # the queue filled up to its bound and no further
    assert sum(batches) == len(stream) == ingest.stats.received  # the broker held the rest: nothing lost
    assert ingest.stats.new == len(stream) and ingest.stats.duplicates == 0
    t = await totals(plane.sessions)
    assert t["ingested"] == len(stream) and t["min_last_seq"] == 6


async def test_ingest_lag_is_the_age_of_the_oldest_uncommitted_message(plane: Plane) -> None:
    (dev,) = await plane.add_devices(1)
    pw = await plane.enroll(["TAB-00000"])
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    port = free_port()
    settings = plane.settings(
        listen_port=port, broker="embedded", ingest_batch_max=1_000_000, ingest_batch_ms=3_600_000
    )
    async with (
        EmbeddedBroker(settings, BrokerAuthority(plane.sessions, T, SVC_USER, SVC_PW)) as broker,
        IngestService(
            settings,
            plane.sessions,
            plane.clock,
            address=broker.address,
            metrics=metrics,
            client_id="ingest-lag",
            shared=False,
        ) as ingest,
    ):
        await ingest.wait_connected()
        assert _sample(registry, "labfleet_ingest_lag_seconds") == 0.0
        async with terminal(port, plane.school_code, "TAB-00000", pw["TAB-00000"], will=False) as c:
            await c.publish(
                T.topic(plane.school_code, "TAB-00000", "heartbeat"),
                json.dumps({"v": 1, "seq": 1, "ts": TS0}),
                qos=1,
            )

        async def received() -> bool:
            return ingest.stats.received >= 1

        await wait_until(received)
        plane.clock.advance(7)
        assert _sample(registry, "labfleet_ingest_lag_seconds") == 7.0
        await ingest.flush()
        assert _sample(registry, "labfleet_ingest_lag_seconds") == 0.0
    async with plane.sessions() as s:
        assert (await s.get(DeviceState, dev)).last_seq == 1


async def test_service_link_connect_and_loss_are_counted_by_reason(
    plane: Plane, mosquitto: MosquittoBroker
) -> None:
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    settings = plane.settings(broker="mosquitto", listen_port=mosquitto.port, service_password=SVC_PW)
    async with IngestService(
        settings,
        plane.sessions,
        plane.clock,
        address=mosquitto.address,
        metrics=metrics,
        client_id="ingest-links",
        shared=False,
    ) as ingest:
        await ingest.wait_connected()
        assert _sample(registry, "labfleet_mqtt_connects_total", device_kind="service") == 1
        await mosquitto.stop()  # the broker goes away under the subscriber

        async def lost() -> bool:
            return not ingest._sub.connected.is_set()

        await wait_until(lost)
        await mosquitto.start()
        await ingest.wait_connected(timeout=20)
    assert _sample(registry, "labfleet_mqtt_disconnects_total", device_kind="service", reason="network") == 1
    assert _sample(registry, "labfleet_mqtt_broker_connection_losses_total") == 1
    assert _sample(registry, "labfleet_mqtt_connects_total", device_kind="service") == 2
    # Leaving is a clean disconnect.
    assert _sample(registry, "labfleet_mqtt_disconnects_total", device_kind="service", reason="clean") == 1


@pytest.fixture
async def plane_with_metrics(plane: Plane) -> AsyncIterator[tuple[DevicePlane, CollectorRegistry]]:
    registry = CollectorRegistry()
    settings = plane.settings(broker="embedded", listen_port=free_port(), ingest_batch_ms=20)
    async with DevicePlane(settings, plane.sessions, plane.clock, metrics=FleetMetrics(registry)) as rt:
        assert rt.ingest is not None
        await rt.ingest.wait_connected()
        yield rt, registry


async def _enroll(plane: Plane, rt: DevicePlane) -> tuple[int, str]:
    (dev,) = await plane.add_devices(1)
    pw = await plane.enroll(["TAB-00000"])
    await rt.credentials_changed("TAB-00000")
    return dev, pw["TAB-00000"]


async def test_device_session_and_its_last_will_are_counted_by_kind_and_reason(
    plane: Plane, plane_with_metrics: tuple[DevicePlane, CollectorRegistry]
) -> None:
    rt, registry = plane_with_metrics
    dev, pw = await _enroll(plane, rt)
    link = await asyncio.to_thread(raw_connect_with_will, rt.address.port, plane.school_code, "TAB-00000", pw)

    async def online(want: bool) -> bool:
        async with plane.sessions() as s:
            st = await s.get(DeviceState, dev)
            return st is not None and st.online is want

    await wait_until(lambda: online(True))
    assert _sample(registry, "labfleet_mqtt_connects_total", device_kind="terminal") == 1
    link.close()  # dropped without DISCONNECT: the broker publishes the Last Will
    await wait_until(lambda: online(False), timeout=15)
    assert _sample(registry, "labfleet_mqtt_disconnects_total", device_kind="terminal", reason="lwt") == 1


async def test_command_result_observes_its_duration_per_command_and_result(
    plane: Plane, plane_with_metrics: tuple[DevicePlane, CollectorRegistry]
) -> None:
    rt, registry = plane_with_metrics
    dev, pw = await _enroll(plane, rt)
    school = plane.school_code
    async with terminal(rt.address.port, school, "TAB-00000", pw) as c:
        await c.subscribe(T.topic(school, "TAB-00000", "cmd"), qos=1)
        await c.publish(
            T.topic(school, "TAB-00000", "status"),
            json.dumps({"v": 1, "state": "online"}),
            qos=1,
            retain=True,
        )

        async def is_online() -> bool:
            return rt.online.get(dev, False)

        await wait_until(is_online)
        async with plane.sessions() as s:
            batch = await commands.create(
                s,
                target_kind="device",
                target_id=dev,
                name="reboot",
                args=None,
                ttl=None,
                timeout_s=None,
                actor="tech",
                now=plane.clock.now(),
            )
            await s.commit()
        rt.wake_dispatcher()
        async for msg in c.messages:
            if str(msg.topic) == T.topic(school, "TAB-00000", "cmd"):
                body = json.loads(msg.payload)
                break
        plane.clock.advance(2.5)  # the reboot takes 2.5 s on the service's clock
        await c.publish(
            T.topic(school, "TAB-00000", "result"),
            json.dumps({"v": 1, "id": body["id"], "ts": TS0, "ok": True}),
            qos=1,
        )

        async def finished() -> bool:
            async with plane.sessions() as s:
                return (await commands.progress(s, batch.batch_id))["by_status"] == {"succeeded": 1}

        await wait_until(finished)
    labels = {"command": "reboot", "result": "ok"}
    assert _sample(registry, "labfleet_command_duration_seconds_count", **labels) == 1
    assert _sample(registry, "labfleet_command_duration_seconds_sum", **labels) == 2.5
    # A repeated result (a redelivery) finishes nothing and is not observed twice.
    assert rt.ingest is not None
    before = rt.ingest.stats.committed
    async with terminal(rt.address.port, school, "TAB-00000", pw, will=False) as c:
        await c.publish(
            T.topic(school, "TAB-00000", "result"),
            json.dumps({"v": 1, "id": body["id"], "ts": TS0, "ok": True}),
            qos=1,
        )

    async def committed() -> bool:
        return rt.ingest.stats.committed > before

    await wait_until(committed)
    assert _sample(registry, "labfleet_command_duration_seconds_count", **labels) == 1


async def test_timed_out_command_is_observed_as_timeout(
    plane: Plane, plane_with_metrics: tuple[DevicePlane, CollectorRegistry]
) -> None:
    rt, registry = plane_with_metrics
    dev, pw = await _enroll(plane, rt)
    school = plane.school_code
    async with terminal(rt.address.port, school, "TAB-00000", pw) as c:
        await c.subscribe(T.topic(school, "TAB-00000", "cmd"), qos=1)
        await c.publish(
            T.topic(school, "TAB-00000", "status"),
            json.dumps({"v": 1, "state": "online"}),
            qos=1,
            retain=True,
        )

        async def is_online() -> bool:
            return rt.online.get(dev, False)

        await wait_until(is_online)
        async with plane.sessions() as s:
            await commands.create(
                s,
                target_kind="device",
                target_id=dev,
                name="diagnostics",
                args=None,
                ttl=None,
                timeout_s=30,
                actor="tech",
                now=plane.clock.now(),
            )
            await s.commit()
        rt.wake_dispatcher()
        async for msg in c.messages:
            if str(msg.topic) == T.topic(school, "TAB-00000", "cmd"):
                break  # received, never answered
    plane.clock.advance(31)
    rt.wake_dispatcher()

    async def observed() -> bool:
        return (
            _sample(
                registry, "labfleet_command_duration_seconds_count", command="diagnostics", result="timeout"
            )
            == 1
        )

    await wait_until(observed)
    assert (
        _sample(registry, "labfleet_command_duration_seconds_sum", command="diagnostics", result="timeout")
        == 31
    )


async def test_refused_message_gets_one_error_reply_per_minute_on_the_devices_cmd_topic(plane: Plane) -> None:
    await plane.add_devices(1)
    pw = await plane.enroll(["TAB-00000"])
    port = free_port()
    settings = plane.settings(listen_port=port, broker="embedded", ingest_batch_ms=20)
    school = plane.school_code
    telemetry = T.topic(school, "TAB-00000", "telemetry")
    async with (
        EmbeddedBroker(settings, BrokerAuthority(plane.sessions, T, SVC_USER, SVC_PW)) as broker,
        IngestService(
            settings,
            plane.sessions,
            plane.clock,
            address=broker.address,
            client_id="ingest-replies",
            shared=False,
        ) as ingest,
    ):
        await ingest.wait_connected()
        async with terminal(port, school, "TAB-00000", pw["TAB-00000"], will=False) as c:
            await c.subscribe(T.topic(school, "TAB-00000", "cmd"), qos=1)
            replies = c.messages

            async def refused(seq: int, field: object) -> None:
                before = ingest.stats.committed
                await c.publish(
                    telemetry, json.dumps({"v": 1, "seq": seq, "ts": TS0, "battery": field}), qos=1
                )

                async def committed() -> bool:
                    return ingest.stats.committed > before

                await wait_until(committed)

            async def next_reply() -> dict[str, object]:
                async for msg in replies:
                    if str(msg.topic).endswith("/cmd"):
                        return wire.decode_downlink(bytes(msg.payload))
                raise AssertionError("no reply")

            await refused(1, 500)  # battery out of range
            assert await asyncio.wait_for(next_reply(), 10) == {
                "v": 1,
                "type": "error",
                "reason": "schema",
                "channel": "telemetry",
                "seq": 1,
                "detail": "battery must be an integer in [0, 100]",
            }
            await refused(2, "full")  # within the minute: recorded, not answered
            plane.clock.advance(61)
            await refused(3, -1)
            reply = await asyncio.wait_for(next_reply(), 10)
            assert (reply["reason"], reply["seq"]) == ("schema", 3)  # seq 2 never got one
    assert ingest.stats.rejected == 3
