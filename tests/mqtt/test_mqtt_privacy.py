"""A login reference from a terminal is kept only as an HMAC pseudonym: never in tables, logs, topics or
metrics."""

from __future__ import annotations

import json
import logging

import aiomqtt
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import MetaData, select

from fleet.domain import wire
from fleet.observability.metrics import FleetMetrics
from fleet.persistence.ingest_repo import pseudonym
from fleet.persistence.models_mqtt import DeadLetter, DeviceState
from fleet.runtime.brokers import BrokerAuthority, EmbeddedBroker, free_port
from fleet.runtime.ingest import IngestService
from tests.mqtt.mqtt_plane import TS0, Plane, terminal, wait_until

SECRET_USER = "alice.wang-2014"


async def test_login_user_is_stored_only_as_hmac_pseudonym(
    plane: Plane, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    settings = plane.settings(listen_port=port, broker="embedded")
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    topics_seen: list[str] = []
    (dev,) = await plane.add_devices(1)
    pw = await plane.enroll(["TAB-00000"])
    authority = BrokerAuthority(plane.sessions, wire.Topics("labfleet"), "labfleet-service", "svc")
    async with (
        EmbeddedBroker(settings, authority) as broker,
        IngestService(
            settings,
            plane.sessions,
            plane.clock,
            address=broker.address,
            shared=False,
            metrics=metrics,
            client_id="ingest-privacy",
        ) as ingest,
    ):
        await ingest.wait_connected()
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier="spy", username="labfleet-service", password="svc"
        ) as spy:
            await spy.subscribe("#", qos=1)
            t = wire.Topics("labfleet")
            async with terminal(port, plane.school_code, "TAB-00000", pw["TAB-00000"]) as c:
                ev = t.topic(plane.school_code, "TAB-00000", "event")
                await c.publish(
                    ev,
                    json.dumps({"v": 1, "seq": 1, "ts": TS0, "type": "login", "user": SECRET_USER}),
                    qos=1,
                )
                # A refused login event (bad seq) still carries the user: its dead letter must not.
                await c.publish(
                    ev,
                    json.dumps({"v": 1, "seq": "x", "ts": TS0, "type": "login", "user": SECRET_USER}),
                    qos=1,
                )

            async def stored() -> bool:
                async with plane.sessions() as s:
                    st = await s.get(DeviceState, dev)
                    dl = (await s.execute(select(DeadLetter))).scalars().all()
                    return st is not None and st.session_pseudonym is not None and len(dl) == 1

            await wait_until(stored)
            async for msg in spy.messages:
                topics_seen.append(str(msg.topic))
                if len(topics_seen) >= 2:
                    break
    async with plane.sessions() as s:
        st = await s.get(DeviceState, dev)
        assert st is not None
        assert st.session_pseudonym == pseudonym(plane.settings().pseudonym_key, SECRET_USER)
        assert SECRET_USER not in st.session_pseudonym
        # No table anywhere holds the raw reference.
        meta = MetaData()
        await (await s.connection()).run_sync(meta.reflect)
        for table in meta.sorted_tables:
            for row in (await s.execute(table.select())).all():
                assert SECRET_USER not in repr(row), table.name
        dead = (await s.execute(select(DeadLetter))).scalar_one()
        assert dead.payload is not None and SECRET_USER.encode() not in dead.payload
    assert SECRET_USER not in caplog.text
    assert all(SECRET_USER not in topic for topic in topics_seen)
    assert SECRET_USER.encode() not in generate_latest(registry)
