"""One access-control matrix for both managed brokers (protocol section 4), over the wire: what a device may
subscribe to (granted QoS, or SUBACK 0x80 / MQTT 5 0x87), what it may publish (delivered, or dropped), and
what it receives; plus the QoS a message arrives at, MQTT 5 CONNECTs, and the end of a rotated or revoked
device's live session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from fleet.domain import wire
from fleet.runtime.brokers import (
    RELOAD_MIN_INTERVAL_S,
    BrokerAuthority,
    EmbeddedBroker,
    MosquittoBroker,
    free_port,
)
from fleet.runtime.plane import DevicePlane
from fleet.services import enrollment
from tests.mqtt.mqtt_plane import TS0, Plane, need_mosquitto, terminal

SVC_USER, SVC_PW = "labfleet-service", "svc-matrix-secret"
T = wire.Topics("labfleet")
ME, PEER = "TAB-00000", "TAB-00001"
REFUSED_311 = 0x80
REFUSED_5 = 0x87  # Not authorized
BROKERS = ["embedded", "mosquitto"]


@pytest.fixture(params=BROKERS)
async def broker(request: pytest.FixtureRequest, plane: Plane) -> AsyncIterator[Any]:
    kind = request.param
    if kind == "mosquitto":
        need_mosquitto()
    settings = plane.settings(
        broker=kind, listen_port=free_port(), data_dir=str(plane.tmp / "mq"), service_password=SVC_PW
    )
    authority = BrokerAuthority(plane.sessions, T, SVC_USER, SVC_PW)
    cls = EmbeddedBroker if kind == "embedded" else MosquittoBroker
    async with cls(settings, authority) as b:
        yield b


@pytest.fixture
async def devices(plane: Plane, broker: Any) -> dict[str, str]:
    await plane.add_devices(2)
    pw = await plane.enroll([ME, PEER])
    await broker.sync()
    return pw


def service(broker: Any, ident: str) -> aiomqtt.Client:
    """A service client where the service's own clients connect (mosquitto: its loopback listener)."""
    a = broker.address
    return aiomqtt.Client(a.host, a.port, identifier=ident, username=a.username, password=a.password)


def codes(granted: Any) -> list[int]:
    return [int(getattr(g, "value", g)) for g in granted]


def subscribe_cases(school: str) -> list[tuple[str, str, bool]]:
    """(case, filter, granted?) for device ME of `school`."""
    return [
        ("own cmd", T.topic(school, ME, "cmd"), True),
        ("another device's cmd", T.topic(school, PEER, "cmd"), False),
        ("another device's telemetry", T.topic(school, PEER, "telemetry"), False),
        ("own telemetry (an uplink)", T.topic(school, ME, "telemetry"), False),
        ("own cmd under another school", T.topic("OTHER", ME, "cmd"), False),
        ("#", "#", False),
        ("+/... (own cmd by wildcard)", f"+/v1/{school}/{ME}/cmd", False),
        ("every device's cmd", f"labfleet/v1/{school}/+/cmd", False),
        ("own subtree", f"labfleet/v1/{school}/{ME}/#", False),
        ("the service's ingest filter", "labfleet/v1/+/+/telemetry", False),
        ("the service's shared ingest group", "$share/ingest/labfleet/v1/+/+/telemetry", False),
        ("own cmd through a shared group", f"$share/g/{T.topic(school, ME, 'cmd')}", False),
        ("$SYS", "$SYS/#", False),
    ]


async def test_subscribe_matrix_mqtt_311(plane: Plane, broker: Any, devices: dict[str, str]) -> None:
    cases = subscribe_cases(plane.school_code)
    async with terminal(broker.port, plane.school_code, ME, devices[ME], will=False) as dev:
        got = {case: codes(await dev.subscribe(filt, qos=1)) for case, filt, _ in cases}
    assert got == {case: [1] if ok else [REFUSED_311] for case, _, ok in cases}


async def test_subscribe_matrix_mqtt_5_on_mosquitto(
    plane: Plane, broker: Any, devices: dict[str, str]
) -> None:
    if isinstance(broker, EmbeddedBroker):
        pytest.skip("the embedded broker speaks MQTT 3.1.1 only (test_mqtt_5_connect_is_answered)")
    cases = subscribe_cases(plane.school_code)
    async with aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=ME,
        username=ME,
        password=devices[ME],
        protocol=aiomqtt.ProtocolVersion.V5,
    ) as dev:
        got = {case: codes(await dev.subscribe(filt, qos=1)) for case, filt, _ in cases}
    assert got == {case: [1] if ok else [REFUSED_5] for case, _, ok in cases}


async def test_publish_matrix_only_own_uplink_channels_are_delivered(
    plane: Plane, broker: Any, devices: dict[str, str]
) -> None:
    school = plane.school_code
    own = {T.topic(school, ME, ch) for ch in wire.DEVICE_PUBLISH_CHANNELS}
    refused = [
        T.topic(school, PEER, "telemetry"),  # another device
        T.topic(school, PEER, "status"),
        T.topic(school, ME, "cmd"),  # the service's downlink
        T.topic("OTHER", ME, "telemetry"),  # another school level
        f"labfleet/v1/{school}/{ME}/bogus",  # no such channel
        f"labfleet/v1/{school}/{ME}/telemetry/extra",
        "labfleet/v1/other-prefix",
        "elsewhere/topic",
    ]
    marker = T.topic(school, ME, "heartbeat")
    async with service(broker, "svc-observer") as svc:
        assert codes(await svc.subscribe("labfleet/#", qos=1)) == [1]
        assert codes(await svc.subscribe("elsewhere/#", qos=1)) == [1]
        async with terminal(broker.port, school, ME, devices[ME], will=False) as dev:
            for topic in refused:
                await dev.publish(topic, b'{"v":1}', qos=1)  # dropped: the PUBACK still comes (3.1.1)
            for topic in sorted(own - {marker}):
                await dev.publish(topic, b'{"v":1}', qos=1)
            await dev.publish(marker, b'{"v":1}', qos=1)
        got: list[str] = []
        async with asyncio.timeout(10):  # a failure deadline, not a timing assertion
            async for msg in svc.messages:
                got.append(str(msg.topic))
                if str(msg.topic) == marker:
                    break
    assert sorted(got) == sorted(own)


async def test_a_device_receives_only_its_own_cmd_topic(
    plane: Plane, broker: Any, devices: dict[str, str]
) -> None:
    school = plane.school_code
    mine = T.topic(school, ME, "cmd")
    async with terminal(broker.port, school, ME, devices[ME], will=False) as dev:
        for filt in ("#", f"labfleet/v1/{school}/+/cmd", T.topic(school, PEER, "cmd"), mine):
            await dev.subscribe(filt, qos=1)
        async with service(broker, "svc-pub") as svc:
            await svc.publish(T.topic(school, PEER, "cmd"), b'{"other":1}', qos=1)
            await svc.publish(T.topic(school, PEER, "telemetry"), b'{"other":1}', qos=1)
            await svc.publish(mine, b'{"mine":1}', qos=1)
        got: list[str] = []
        async with asyncio.timeout(10):
            async for msg in dev.messages:
                got.append(str(msg.topic))
                if str(msg.topic) == mine:
                    break
    assert got == [mine]


async def test_messages_arrive_at_the_lower_of_published_and_subscribed_qos(
    plane: Plane, broker: Any, devices: dict[str, str]
) -> None:
    school = plane.school_code
    cmd = T.topic(school, ME, "cmd")
    received: list[tuple[bytes, int]] = []
    for sub_qos, pub_qos in ((1, 0), (1, 1), (0, 1)):
        async with terminal(broker.port, school, ME, devices[ME], will=False) as dev:
            await dev.subscribe(cmd, qos=sub_qos)
            async with service(broker, "svc-qos") as svc:
                await svc.publish(cmd, f"{sub_qos}{pub_qos}".encode(), qos=pub_qos)
            async with asyncio.timeout(10):
                async for msg in dev.messages:
                    received.append((bytes(msg.payload), msg.qos))
                    break
            await dev.unsubscribe(cmd)
    # A QoS 0 error reply stays QoS 0 on a QoS 1 subscription; QoS 1 never goes above a QoS 0 subscription.
    assert received == [(b"10", 0), (b"11", 1), (b"01", 0)]


async def test_mqtt_5_connect_is_answered(plane: Plane, broker: Any, devices: dict[str, str]) -> None:
    v5 = aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=ME,
        username=ME,
        password=devices[ME],
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=5,
    )
    if isinstance(broker, EmbeddedBroker):
        # MQTT 3.1.1 only: an MQTT 5 CONNECT is refused at once with CONNACK 0x84 Unsupported Protocol
        # Version (it used to get no answer until the client's own timeout).
        with pytest.raises(aiomqtt.MqttCodeError) as err:
            async with v5:
                pass
        assert int(getattr(err.value.rc, "value", err.value.rc)) == 0x84
    else:
        async with v5 as dev:
            assert codes(await dev.subscribe(T.topic(plane.school_code, ME, "cmd"), qos=1)) == [1]


async def test_error_reply_reaches_the_device_at_qos_0(
    plane: Plane, broker: Any, devices: dict[str, str]
) -> None:
    from fleet.runtime.ingest import IngestService

    settings = plane.settings(broker="none", service_password=SVC_PW, ingest_batch_ms=20)
    async with IngestService(
        settings, plane.sessions, plane.clock, address=broker.address, client_id="ingest-qos", shared=False
    ) as ingest:
        await ingest.wait_connected()
        async with terminal(broker.port, plane.school_code, ME, devices[ME], will=False) as dev:
            await dev.subscribe(T.topic(plane.school_code, ME, "cmd"), qos=1)
            await dev.publish(T.topic(plane.school_code, ME, "telemetry"), b"{not json", qos=1)
            async with asyncio.timeout(10):
                async for msg in dev.messages:
                    body = json.loads(bytes(msg.payload))
                    break
    assert (body["type"], body["reason"], msg.qos) == ("error", "malformed_json", 0)


# ------------------------------------------------------------------ live sessions end on rotate and revoke


@pytest.fixture(params=BROKERS)
async def plane_rt(request: pytest.FixtureRequest, plane: Plane) -> AsyncIterator[DevicePlane]:
    if request.param == "mosquitto":
        need_mosquitto()
    settings = plane.settings(
        broker=request.param, listen_port=free_port(), data_dir=str(plane.tmp / "mq"), ingest_batch_ms=20
    )
    async with DevicePlane(settings, plane.sessions, plane.clock) as rt:
        yield rt


@pytest.mark.parametrize("change", ["rotate", "revoke"])
async def test_rotation_and_revocation_end_the_live_session_within_1_s(
    plane: Plane, plane_rt: DevicePlane, change: str
) -> None:
    (dev_id,) = await plane.add_devices(1)
    old = (await plane.enroll([ME]))[ME]
    await plane_rt.credentials_changed(ME)
    loop = asyncio.get_running_loop()
    # mosquitto applies credential changes at most once per RELOAD_MIN_INTERVAL_S (the enrollment just used
    # it): let that window pass so the figure below is the end of the session, not the coalescing wait.
    await asyncio.sleep(RELOAD_MIN_INTERVAL_S)
    async with terminal(plane_rt.settings.mqtt.listen_port, plane.school_code, ME, old, will=False) as dev:
        await dev.subscribe(T.topic(plane.school_code, ME, "cmd"), qos=1)
        await dev.publish(
            T.topic(plane.school_code, ME, "heartbeat"), json.dumps({"v": 1, "seq": 1, "ts": TS0}), qos=1
        )
        async with plane.sessions() as s:
            if change == "rotate":
                await enrollment.rotate(s, dev_id, now=plane.clock.now())
            else:
                await enrollment.revoke(s, dev_id, now=plane.clock.now())
            await s.commit()
        started = loop.time()
        await plane_rt.credentials_changed(ME, revoked=change == "revoke", rotated=change == "rotate")
        with pytest.raises(aiomqtt.MqttError):
            async with asyncio.timeout(5):  # a failure deadline; the figure is asserted below
                async for _msg in dev.messages:
                    pass
        ended = loop.time() - started
    assert ended < 1.0, f"the {change}d device's session lasted {ended:.2f} s"
    # The old password no longer logs in.
    with pytest.raises(aiomqtt.MqttError):
        async with terminal(
            plane_rt.settings.mqtt.listen_port, plane.school_code, ME, old, will=False, timeout=3
        ):
            pass


async def test_a_publish_to_a_dollar_topic_is_refused_as_the_doc_says(
    plane: Plane, broker: Any, devices: dict[str, str]
) -> None:
    """Protocol section 4: dropped on mosquitto (the connection stays); a protocol error on the embedded
    broker, which closes the connection."""
    school = plane.school_code
    async with terminal(broker.port, school, ME, devices[ME], will=False) as dev:
        if isinstance(broker, EmbeddedBroker):
            with pytest.raises(aiomqtt.MqttError):
                await dev.publish("$SYS/labfleet", b"x", qos=1, timeout=5)
                async with asyncio.timeout(5):
                    async for _msg in dev.messages:
                        pass
        else:
            await dev.publish("$SYS/labfleet", b"x", qos=1, timeout=5)
            await dev.publish(T.topic(school, ME, "heartbeat"), b'{"v":1}', qos=1, timeout=5)  # still open


def _mqtt5_puback_reason(port: int, password: str, topic: str) -> int:
    """The reason code of the PUBACK mosquitto sends an MQTT 5 device for a QoS 1 PUBLISH on `topic`."""
    import paho.mqtt.client as mqtt

    got: list[int] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=ME, protocol=mqtt.MQTTv5)
    c.username_pw_set(ME, password)
    c.on_publish = lambda _c, _u, _mid, rc, _p: got.append(int(rc.value))
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(topic, b'{"v":1}', qos=1).wait_for_publish(timeout=10)
    finally:
        c.disconnect()
        c.loop_stop()
    return got[0]


async def test_mqtt_5_publish_outside_its_topics_gets_puback_0x87_on_mosquitto(
    plane: Plane, broker: Any, devices: dict[str, str]
) -> None:
    if isinstance(broker, EmbeddedBroker):
        pytest.skip("the embedded broker speaks MQTT 3.1.1 only")
    school = plane.school_code
    refused = await asyncio.to_thread(
        _mqtt5_puback_reason, broker.port, devices[ME], T.topic(school, PEER, "telemetry")
    )
    # 0x10 "no matching subscribers": accepted, nobody listens in this test
    own = await asyncio.to_thread(
        _mqtt5_puback_reason, broker.port, devices[ME], T.topic(school, ME, "telemetry")
    )
    assert (refused, own) == (REFUSED_5, 0x10)
