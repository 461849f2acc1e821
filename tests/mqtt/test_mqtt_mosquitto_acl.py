"""The managed mosquitto's access control over the wire: dynamic-security roles confine each device to its own
topics (school level included), bad identities never get in, credential changes in a burst share one
password-file reload, and a bulk change is applied by one restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from sqlalchemy import select

from fleet.domain import credentials, wire
from fleet.errors import InvalidInput
from fleet.persistence.models_mqtt import DeadLetter, DeviceCredential, DeviceState
from fleet.runtime import dynsec
from fleet.runtime.brokers import BrokerAuthority, MosquittoBroker, free_port
from fleet.runtime.ingest import IngestService
from fleet.services import enrollment
from tests.mqtt.mqtt_plane import TS0, Plane, need_mosquitto, terminal, wait_until

SVC_USER, SVC_PW = "labfleet-service", "svc-acl-secret"
T = wire.Topics("labfleet")


@pytest.fixture
async def mosq(plane: Plane, tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    need_mosquitto()
    settings = plane.settings(
        broker="mosquitto", listen_port=free_port(), data_dir=str(tmp_path / "mq"), service_password=SVC_PW
    )
    async with MosquittoBroker(settings, BrokerAuthority(plane.sessions, T, SVC_USER, SVC_PW)) as broker:
        yield broker


def _service(port: int, ident: str) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, identifier=ident, username=SVC_USER, password=SVC_PW)


async def _drain(client: aiomqtt.Client, until_topic: str, limit_s: float = 5.0) -> list[str]:
    """Topics received up to and including `until_topic` (a marker sent last); the bound is a failure
    deadline."""
    got: list[str] = []
    async with asyncio.timeout(limit_s):
        async for msg in client.messages:
            got.append(str(msg.topic))
            if str(msg.topic) == until_topic:
                return got
    return got


def test_device_role_grants_its_own_channels_and_subscribing_to_its_cmd_topic_literally() -> None:
    acls = dynsec.device_acls(T, "S1", "TAB-1")
    assert [(a["acltype"], a["topic"]) for a in acls] == [
        ("publishClientSend", f"labfleet/v1/S1/TAB-1/{ch.value}") for ch in wire.DEVICE_PUBLISH_CHANNELS
    ] + [
        ("subscribeLiteral", "labfleet/v1/S1/TAB-1/cmd"),
        ("publishClientReceive", "labfleet/v1/S1/TAB-1/cmd"),
    ]
    cfg = dynsec.config(T, {"TAB-1": "S1"}, admin_username="adm", service_username=SVC_USER)
    assert cfg["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    assert {"username": "TAB-1", "clientid": "TAB-1", "roles": [{"rolename": "device:TAB-1"}]} in cfg[
        "clients"
    ]


def test_changes_create_delete_and_move_devices_between_schools() -> None:
    cmds = dynsec.changes(T, {"A": "S1", "B": "S1", "C": "S1"}, {"A": "S1", "B": "S2", "D": "S1"})
    assert [(c["command"], c.get("username") or c.get("rolename")) for c in cmds] == [
        ("deleteClient", "C"),
        ("deleteRole", "device:C"),
        ("deleteClient", "B"),
        ("deleteRole", "device:B"),
        ("createRole", "device:B"),
        ("createClient", "B"),
        ("createRole", "device:D"),
        ("createClient", "D"),
    ]
    assert dynsec.changes(T, {"A": "S1"}, {"A": "S1"}) == []
    assert all(
        len(json.dumps({"commands": b})) < dynsec.MAX_CONTROL_BYTES
        for b in dynsec.batches(dynsec.changes(T, {}, {f"TAB-{i}": "S1" for i in range(500)}))
    )


async def test_devices_publish_and_receive_only_their_own_topics_on_mosquitto(
    plane: Plane, mosq: MosquittoBroker
) -> None:
    await plane.add_devices(2)
    pw = await plane.enroll(["TAB-00000", "TAB-00001"])
    await mosq.sync()
    school = plane.school_code
    own = T.topic(school, "TAB-00000", "telemetry")
    async with _service(mosq.port, "svc-sub") as svc:
        await svc.subscribe("labfleet/#", qos=1)
        async with terminal(mosq.port, school, "TAB-00000", pw["TAB-00000"], will=False) as dev:
            for topic in (
                T.topic(school, "TAB-00001", "telemetry"),
                T.topic(school, "TAB-00000", "cmd"),
                "labfleet/v1/other-prefix",
                f"labfleet/v1/{school}/TAB-00000/telemetry/extra",
            ):
                await dev.publish(topic, b'{"v":1}', qos=1)
            for ch in wire.DEVICE_PUBLISH_CHANNELS:
                if ch != wire.Channel.TELEMETRY:
                    await dev.publish(T.topic(school, "TAB-00000", ch), b'{"v":1}', qos=1)
            await dev.publish(own, b'{"v":1,"marker":1}', qos=1)
        got = await _drain(svc, own)
    assert sorted(got) == sorted(T.topic(school, "TAB-00000", ch) for ch in wire.DEVICE_PUBLISH_CHANNELS)

    # Subscriptions: whatever filter a device asks for, only its own cmd topic reaches it.
    async with terminal(mosq.port, school, "TAB-00000", pw["TAB-00000"], will=False) as dev:
        for filt in (
            "#",
            f"labfleet/v1/{school}/+/cmd",
            f"labfleet/v1/{school}/TAB-00000/#",
            T.topic(school, "TAB-00001", "cmd"),
            T.topic(school, "TAB-00001", "telemetry"),
        ):
            await dev.subscribe(filt, qos=1)
        await dev.subscribe(T.topic(school, "TAB-00000", "cmd"), qos=1)
        async with _service(mosq.port, "svc-pub") as svc:
            await svc.publish(T.topic(school, "TAB-00001", "cmd"), b'{"other":1}', qos=1)
            await svc.publish(T.topic(school, "TAB-00001", "telemetry"), b'{"other":1}', qos=1)
            await svc.publish(T.topic(school, "TAB-00000", "cmd"), b'{"mine":1}', qos=1)
        got = await _drain(dev, T.topic(school, "TAB-00000", "cmd"))
    assert set(got) == {T.topic(school, "TAB-00000", "cmd")}

    with pytest.raises(aiomqtt.MqttError):
        async with terminal(mosq.port, school, "TAB-00000", "wrong-password", will=False, timeout=3):
            pass


@pytest.mark.parametrize("bad_identity", ["TAB+1", "TAB#1", "TAB/1", "$SYS"])
async def test_wildcard_and_slash_identities_cannot_connect_to_mosquitto(
    mosq: MosquittoBroker, bad_identity: str
) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            "127.0.0.1", mosq.port, identifier=bad_identity, username=bad_identity, password="x", timeout=3
        ):
            pass


async def test_a_device_cannot_publish_under_another_school_level_and_valid_data_still_lands(
    plane: Plane, mosq: MosquittoBroker
) -> None:
    (dev_id,) = await plane.add_devices(1)
    pw = await plane.enroll(["TAB-00000"])
    await mosq.sync()
    settings = plane.settings(
        broker="mosquitto", listen_port=mosq.port, service_password=SVC_PW, ingest_batch_ms=20
    )
    async with IngestService(
        settings, plane.sessions, plane.clock, address=mosq.address, client_id="ingest-acl", shared=False
    ) as ingest:
        await ingest.wait_connected()
        async with terminal(mosq.port, plane.school_code, "TAB-00000", pw["TAB-00000"], will=False) as dev:
            # The device's role pins its school level: the broker drops this (the acl_file's `+` let it
            # through to be dead-lettered by the ingest).
            foreign = T.topic("OTHER-SCHOOL", "TAB-00000", "heartbeat")
            await dev.publish(foreign, json.dumps({"v": 1, "seq": 5, "ts": TS0}), qos=1)
            await dev.publish(
                T.topic(plane.school_code, "TAB-00000", "heartbeat"),
                json.dumps({"v": 1, "seq": 1, "ts": TS0}),
                qos=1,
            )

            async def landed() -> bool:
                async with plane.sessions() as s:
                    st = await s.get(DeviceState, dev_id)
                return st is not None and st.last_seq == 1

            await wait_until(landed)
    async with plane.sessions() as s:
        dead = (await s.execute(select(DeadLetter))).scalars().all()
        st = await s.get(DeviceState, dev_id)
    assert dead == [] and ingest.stats.rejected == 0  # the foreign-school message never reached the ingest
    assert st is not None and st.messages_total == 1


async def test_a_burst_of_enrollments_shares_one_password_reload_and_revocation_still_kicks(
    plane: Plane, mosq: MosquittoBroker
) -> None:
    ids = await plane.add_devices(20)
    serials = [f"TAB-{i:05d}" for i in range(20)]
    pw = await plane.enroll(serials)
    before = mosq.reloads
    await asyncio.gather(*(mosq.sync() for _ in serials))  # one sync per enrollment, as the API does
    assert mosq.reloads == before + 1
    await mosq.sync()  # nothing changed: no rewrite, no reload
    assert mosq.reloads == before + 1
    for serial in (serials[0], serials[-1]):
        async with terminal(mosq.port, plane.school_code, serial, pw[serial], will=False) as c:
            await c.publish(
                T.topic(plane.school_code, serial, "heartbeat"),
                json.dumps({"v": 1, "seq": 1, "ts": TS0}),
                qos=1,
            )

    async with terminal(mosq.port, plane.school_code, serials[0], pw[serials[0]], will=False) as c:
        async with plane.sessions() as s:
            await enrollment.revoke(s, ids[0], now=plane.clock.now())
            await s.commit()
        await mosq.sync()
        assert mosq.reloads == before + 2
        with pytest.raises(aiomqtt.MqttError):
            for seq in range(2, 60):  # bounded: the broker drops the revoked device on the reload
                await c.publish(
                    T.topic(plane.school_code, serials[0], "heartbeat"),
                    json.dumps({"v": 1, "seq": seq, "ts": TS0}),
                    qos=1,
                    timeout=1,
                )
                await asyncio.sleep(0.1)


async def test_enrollment_refuses_an_identity_with_a_colon_with_a_clear_error(plane: Plane) -> None:
    await plane.add_devices(1, prefix="robot:cafe")  # as the old edge agent read kits back: `robot:<uid>`
    with pytest.raises(InvalidInput, match="holds a ':'.*mosquitto's password file") as err:
        await plane.enroll(["robot:cafe-00000"])
    assert err.value.details == {"field": "serial_number", "reason": "invalid_identity"}


async def test_identity_the_password_file_cannot_hold_is_left_out_and_the_broker_keeps_working(
    plane: Plane, mosq: MosquittoBroker
) -> None:
    await plane.add_devices(1)
    (legacy,) = await plane.add_devices(1, prefix="robot:cafe")
    pw = await plane.enroll(["TAB-00000"])
    async with (
        plane.sessions() as s
    ):  # a credential from before enrollment refused ':' (and migration 0040 missed)
        s.add(
            DeviceCredential(
                device_id=legacy,
                username="robot:cafe-00000",
                school_code=plane.school_code,
                password_hash=credentials.hash_password("legacy-pw"),
                created_at=plane.clock.now(),
            )
        )
        await s.commit()
    await mosq.sync()
    users = [line.split(":", 1)[0] for line in (mosq.dir / "passwd").read_text().splitlines()]
    # a "robot:cafe..." line would be split at its ':' by mosquitto
    assert users == [SVC_USER, mosq.admin_username, "TAB-00000"]
    async with terminal(mosq.port, plane.school_code, "TAB-00000", pw["TAB-00000"], will=False) as c:
        await c.publish(
            T.topic(plane.school_code, "TAB-00000", "heartbeat"),
            json.dumps({"v": 1, "seq": 1, "ts": TS0}),
            qos=1,
        )
    with pytest.raises(aiomqtt.MqttError):
        async with terminal(
            mosq.port, plane.school_code, "robot:cafe-00000", "legacy-pw", will=False, timeout=3
        ):
            pass


def test_the_stall_estimate_sends_a_lab_of_30_at_10000_devices_to_a_restart() -> None:
    assert dynsec.stall_s(2, 100) < 0.1  # one enrollment in a small fleet: a control command
    assert dynsec.stall_s(2 * 30, 10_000) >= dynsec.BULK_STALL_S
    assert dynsec.stall_s(2 * 29, 10_000) < dynsec.BULK_STALL_S


async def test_a_bulk_change_is_applied_by_one_restart_and_the_acls_hold(
    plane: Plane, mosq: MosquittoBroker
) -> None:
    mosq.bulk_stall_s = 0.0  # every change counts as bulk here; in service dynsec.BULK_STALL_S decides
    await plane.add_devices(30)
    serials = [f"TAB-{i:05d}" for i in range(30)]
    pw = await plane.enroll(serials)
    before_pid, before = mosq.proc.pid if mosq.proc else None, mosq.restarts
    await mosq.sync()
    assert mosq.restarts == before + 1 and mosq.proc is not None and mosq.proc.pid != before_pid
    school = plane.school_code
    async with terminal(mosq.port, school, serials[-1], pw[serials[-1]], will=False) as dev:
        granted = [await dev.subscribe(f, qos=1) for f in (T.topic(school, serials[-1], "cmd"), "#")]
    assert [int(getattr(g[0], "value", g[0])) for g in granted] == [1, 0x80]
