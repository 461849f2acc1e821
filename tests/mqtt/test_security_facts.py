"""What the security inspection reads is recorded by the running service: refused CONNECTs of revoked devices
(counted by the embedded broker's auth check, written at most once a minute, no identity in the logs), and the
pseudonym key an ingest worker starts with (by fingerprint, never the key)."""

from __future__ import annotations

import logging

import aiomqtt
import pytest
from sqlalchemy import select

from fleet.domain.privacy import key_fingerprint
from fleet.persistence.models import PseudonymKeyEpoch
from fleet.persistence.models_mqtt import DeviceCredential
from fleet.runtime.brokers import free_port
from fleet.runtime.plane import DevicePlane
from fleet.services import enrollment
from tests.mqtt.mqtt_plane import Plane, terminal


async def _credential(plane: Plane, identity: str) -> DeviceCredential:
    async with plane.sessions() as s:
        return (
            await s.execute(select(DeviceCredential).where(DeviceCredential.username == identity))
        ).scalar_one()


async def test_a_revoked_device_still_trying_is_counted_without_naming_it_in_logs(
    plane: Plane, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    port = free_port()
    settings = plane.settings(broker="embedded", listen_port=port)
    (revoked, _kept) = await plane.add_devices(2)
    pw = await plane.enroll(["TAB-00000", "TAB-00001"])
    async with plane.sessions() as s:
        await enrollment.revoke(s, revoked, now=plane.clock.now())
        await s.commit()
    async with DevicePlane(settings, plane.sessions, plane.clock) as rt:
        assert rt.ingest is not None
        await rt.ingest.wait_connected()
        for _ in range(3):
            with pytest.raises(aiomqtt.MqttError):
                async with terminal(port, plane.school_code, "TAB-00000", pw["TAB-00000"], timeout=3):
                    pass
        with pytest.raises(aiomqtt.MqttError):  # a wrong password of a live device is not a revoked one
            async with terminal(port, plane.school_code, "TAB-00001", "wrong", timeout=3):
                pass
        async with terminal(port, plane.school_code, "TAB-00001", pw["TAB-00001"]):
            pass
        assert (await _credential(plane, "TAB-00000")).refused_connects == 0  # in memory until the flush
        plane.clock.advance(60)
        assert await rt.flush_refused_connects() == 1
        assert await rt.flush_refused_connects() == 0  # nothing new: no write
        with pytest.raises(aiomqtt.MqttError):
            async with terminal(port, plane.school_code, "TAB-00000", pw["TAB-00000"], timeout=3):
                pass
    # leaving the plane flushed the last attempt
    cred = await _credential(plane, "TAB-00000")
    assert cred.refused_connects == 4 and cred.last_refused_at is not None
    assert (await _credential(plane, "TAB-00001")).refused_connects == 0
    assert "TAB-00000" not in caplog.text


async def test_an_ingest_worker_records_the_pseudonym_key_it_starts_with(plane: Plane) -> None:
    port = free_port()
    for key, minutes in (("first-key", 0), ("first-key", 5), ("second-key", 10)):
        plane.clock.advance(minutes * 60)
        settings = plane.settings(broker="embedded", listen_port=port).model_copy(
            update={"pseudonym_key": key}
        )
        async with DevicePlane(settings, plane.sessions, plane.clock) as rt:
            assert rt.ingest is not None
    async with plane.sessions() as s:
        rows = (await s.execute(select(PseudonymKeyEpoch).order_by(PseudonymKeyEpoch.id))).scalars().all()
    assert [r.fingerprint for r in rows] == [key_fingerprint("first-key"), key_fingerprint("second-key")]
    assert all("key" not in r.fingerprint for r in rows)
