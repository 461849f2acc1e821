"""The stocktake's network pre-marks from real traffic (issue 21, point 2): a terminal publishes telemetry
through the embedded broker, the ingest writes it, and a count of its room started afterwards marks it found
and seen by the network; an enrolled but silent terminal and one never enrolled stay missing."""

from __future__ import annotations

from fleet.domain.enums import Role
from fleet.domain.permissions import Principal
from fleet.domain.stocktake import WindowChoice
from fleet.persistence.db import unit_of_work
from fleet.persistence.models_mqtt import DeviceState
from fleet.services import stocktake
from tests.mqtt.mqtt_plane import Plane, telemetry_stream, wait_until
from tests.mqtt.test_mqtt_embedded import device_client, embedded

__all__ = ["embedded"]  # the broker-and-ingest fixture, used by name below


async def test_a_terminal_that_reported_today_is_pre_marked_found(plane: Plane, embedded) -> None:
    broker, _ingest = embedded
    heard, silent, never = await plane.add_devices(3)
    passwords = await plane.enroll(["TAB-00000", "TAB-00001"])
    await broker.sync()
    async with device_client(plane, broker.port, "TAB-00000", passwords["TAB-00000"]) as c:
        for topic, payload in telemetry_stream(plane.school_code, ["TAB-00000"], 2):
            await c.publish(topic, payload, qos=1)

        async def written() -> bool:
            async with plane.sessions() as s:
                st = await s.get(DeviceState, heard)
                return st is not None and st.last_seq == 2

        await wait_until(written)
    tech = Principal("tech", Role.TECHNICIAN, False, frozenset({plane.school_id}))
    async with unit_of_work(plane.sessions) as s:
        st = await stocktake.start(s, tech, plane.clock, plane.room_id, WindowChoice.TODAY)
        count = await stocktake.view(s, tech, st.id)
    lines = {x.device_id: (x.status, x.seen_by_network) for x in count.lines}
    assert lines == {
        heard: ("found", True),
        silent: ("missing", False),
        never: ("missing", False),
    }
