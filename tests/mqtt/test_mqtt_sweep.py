"""Heartbeat backstop: a silent device goes offline; expected outside lessons, unexpected (with an alert) in
one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from fleet.persistence.models_mqtt import Alert, DeviceState, PresenceTransition
from fleet.runtime.plane import DevicePlane
from tests.mqtt.mqtt_plane import Plane


async def _silent_online_devices(plane: Plane, n: int, last_seen: datetime) -> list[int]:
    ids = await plane.add_devices(n)
    await plane.enroll([f"TAB-{i:05d}" for i in range(n)])
    async with plane.sessions() as s:
        for dev in ids:
            s.add(
                DeviceState(device_id=dev, online=True, last_seen_at=last_seen, online_changed_at=last_seen)
            )
        await s.commit()
    return ids


async def test_silent_device_goes_offline_unexpectedly_during_a_lesson(plane: Plane) -> None:
    ids = await _silent_online_devices(plane, 2, plane.clock.now() - timedelta(seconds=200))
    async with DevicePlane(plane.settings(broker="none"), plane.sessions, plane.clock) as rt:
        changes = await rt.sweep_once()
        assert sorted(
            (ref.device_id, online, expected, cause) for ref, online, expected, cause in changes
        ) == [(ids[0], False, False, "heartbeat_timeout"), (ids[1], False, False, "heartbeat_timeout")]
        assert await rt.sweep_once() == []  # already offline: no second transition
    async with plane.sessions() as s:
        alerts = (await s.execute(select(Alert.rule, Alert.status))).all()
        trans = (await s.execute(select(PresenceTransition.expected))).scalars().all()
    assert sorted(alerts) == [("unexpected_offline", "open")] * 2 and trans == [False, False]


async def test_silent_device_after_school_is_expected_offline_without_alert(plane: Plane) -> None:
    plane.clock.set(datetime(2026, 9, 7, 10, 30, tzinfo=UTC))  # Monday, after the last period (09:45)
    await _silent_online_devices(plane, 1, plane.clock.now() - timedelta(seconds=200))
    async with DevicePlane(plane.settings(broker="none"), plane.sessions, plane.clock) as rt:
        changes = await rt.sweep_once()
    assert [(online, expected) for _, online, expected, _ in changes] == [(False, True)]
    async with plane.sessions() as s:
        assert (await s.execute(select(Alert))).scalars().all() == []


async def test_recently_heard_device_stays_online(plane: Plane) -> None:
    await _silent_online_devices(plane, 1, plane.clock.now() - timedelta(seconds=30))
    async with DevicePlane(plane.settings(broker="none"), plane.sessions, plane.clock) as rt:
        assert await rt.sweep_once() == []
