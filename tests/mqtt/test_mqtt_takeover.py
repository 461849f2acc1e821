"""No device can take over another device's MQTT session (connect with its client id to kick it off or wipe
its queued commands), on the embedded amqtt broker and on a managed mosquitto; the service's own clients keep
their own client ids."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from fleet.domain import wire
from fleet.runtime.brokers import BrokerAuthority, EmbeddedBroker, MosquittoBroker, free_port
from tests.mqtt.mqtt_plane import Plane, need_mosquitto, terminal

SVC_USER, SVC_PW = "labfleet-service", "svc-takeover-secret"
T = wire.Topics("labfleet")
# Failure deadline for a message to arrive (not a timing assertion).
RECEIVE_DEADLINE_S = 5.0


@pytest.fixture(params=["embedded", "mosquitto"])
async def broker(request: pytest.FixtureRequest, plane: Plane, tmp_path: Path) -> AsyncIterator[Any]:
    authority = BrokerAuthority(plane.sessions, T, SVC_USER, SVC_PW)
    if request.param == "mosquitto":
        need_mosquitto()
        settings = plane.settings(
            broker="mosquitto",
            listen_port=free_port(),
            data_dir=str(tmp_path / "mq"),
            service_password=SVC_PW,
        )
        async with MosquittoBroker(settings, authority) as mosq:
            yield mosq
    else:
        settings = plane.settings(broker="embedded", listen_port=free_port(), service_password=SVC_PW)
        async with EmbeddedBroker(settings, authority) as emb:
            yield emb


def _service(broker: Any, ident: str) -> aiomqtt.Client:
    """A service client where the service's own clients connect (broker.address)."""
    return aiomqtt.Client(
        broker.address.host, broker.address.port, identifier=ident, username=SVC_USER, password=SVC_PW
    )


async def _connects(port: int, *, client_id: str, username: str, password: str, clean: bool) -> bool:
    """Whether the broker accepts this CONNECT (the connection is closed again at once)."""
    try:
        async with aiomqtt.Client(
            "127.0.0.1",
            port,
            identifier=client_id,
            username=username,
            password=password,
            clean_session=clean,
            timeout=3,
        ):
            return True
    except aiomqtt.MqttError:
        return False


async def test_a_device_cannot_take_over_another_devices_session(plane: Plane, broker: Any) -> None:
    await plane.add_devices(2)
    pw = await plane.enroll(["TAB-00000", "TAB-00001"])
    await broker.sync()
    school = plane.school_code
    cmd = T.topic(school, "TAB-00000", "cmd")
    async with terminal(broker.port, school, "TAB-00000", pw["TAB-00000"]) as victim:
        await victim.subscribe(cmd, qos=1)
        # Another device's valid credentials with the victim's client id, persistent and clean session ...
        for clean in (False, True):
            accepted = await _connects(
                broker.port,
                client_id="TAB-00000",
                username="TAB-00001",
                password=pw["TAB-00001"],
                clean=clean,
            )
            # amqtt refuses it; mosquitto takes it as TAB-00001 (its client id replaced by the username).
            assert accepted == isinstance(broker, MosquittoBroker)
        # ... and the victim's identity with a wrong password: refused, without touching the victim's session
        # (amqtt 0.12 on its own took the live connection over and deleted the session before it said no).
        for clean in (False, True):
            assert not await _connects(
                broker.port, client_id="TAB-00000", username="TAB-00000", password="wrong", clean=clean
            )

        # The victim is still connected on the same link, its subscription intact: a command reaches it.
        async with _service(broker, "svc-cmd") as svc:
            await svc.publish(
                cmd, json.dumps({"v": 1, "type": "command", "id": "c-1", "cmd": "reboot"}), qos=1
            )
        async with asyncio.timeout(RECEIVE_DEADLINE_S):
            async for msg in victim.messages:
                assert str(msg.topic) == cmd and json.loads(msg.payload)["id"] == "c-1"
                break


async def test_service_clients_keep_their_own_client_ids_side_by_side(plane: Plane, broker: Any) -> None:
    topic = T.topic(plane.school_code, "TAB-00000", "telemetry")
    async with _service(broker, "svc-ingest-0") as sub, _service(broker, "svc-ingest-1") as other:
        await sub.subscribe("labfleet/#", qos=1)
        async with _service(broker, "svc-commands") as pub:
            await pub.publish(topic, b'{"v":1}', qos=1)
        async with asyncio.timeout(RECEIVE_DEADLINE_S):
            async for msg in sub.messages:
                assert str(msg.topic) == topic
                break
        await other.publish(topic, b'{"v":1}', qos=1)  # still connected: nobody took its session over


async def test_devices_cannot_log_in_on_mosquittos_service_listener(plane: Plane, tmp_path: Path) -> None:
    need_mosquitto()
    await plane.add_devices(1)
    pw = await plane.enroll(["TAB-00000"])
    settings = plane.settings(
        broker="mosquitto", listen_port=free_port(), data_dir=str(tmp_path / "mq"), service_password=SVC_PW
    )
    async with MosquittoBroker(settings, BrokerAuthority(plane.sessions, T, SVC_USER, SVC_PW)) as mosq:
        assert await _connects(
            mosq.port, client_id="TAB-00000", username="TAB-00000", password=pw["TAB-00000"], clean=False
        )
        # Where client ids are free, only the service may log in: a device could pick any id there.
        assert not await _connects(
            mosq.service_port,
            client_id="TAB-00001",
            username="TAB-00000",
            password=pw["TAB-00000"],
            clean=False,
        )
        conf = mosq.conf_path.read_text()
        device_listener = conf.split(f"listener {mosq.port} ")[1].split("\nlistener ")[0]
        assert "use_username_as_clientid true" in device_listener
