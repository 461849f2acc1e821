"""The cockpit's live picture (fleet.services.console_live): one computation per interval shared by every
viewer, each viewer filtered to its schools, and figures read from the database and reference data, so they
are right whoever ingests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert

from fleet.domain.enums import Role
from fleet.domain.permissions import Principal
from fleet.errors import NotFound
from fleet.persistence.models import Room, School
from fleet.persistence.models_mqtt import DeviceState
from fleet.services.console_live import REFRESH_S, SLOW_S, LiveHub, room_detail, scope_key
from tests.mqtt.mqtt_plane import LESSON_TIME, Plane, seed


def principal(role: Role = Role.IT_STAFF, schools: tuple[int, ...] | None = None) -> Principal:
    return Principal(
        name=f"{role}-{schools}",
        role=role,
        district_wide=schools is None,
        school_ids=frozenset(schools or ()),
    )


@pytest.fixture
async def plane(any_db_url: str, tmp_path: Path) -> Plane:
    p = await seed(any_db_url, tmp_path)
    yield p
    await p.engine.dispose()


async def second_school(p: Plane) -> tuple[int, int]:
    async with p.sessions() as s:
        school = School(
            district_id=(await s.get(School, p.school_id)).district_id,  # type: ignore[union-attr]
            code="zz-second",
            name="Second",
            uplink_mbps=50,
            timezone="UTC",
            created_at=p.clock.now(),
        )
        s.add(school)
        await s.flush()
        room = Room(
            school_id=school.id, name="Room B", kind="smart_classroom", capacity=30, created_at=p.clock.now()
        )
        s.add(room)
        await s.commit()
        return int(school.id), int(room.id)


async def set_online(p: Plane, device_ids: list[int], online: bool = True) -> None:
    """What an ingest process (this one or a `labfleet ingest` worker) commits for devices it heard from."""
    async with p.sessions() as s:
        await s.execute(
            insert(DeviceState),
            [{"device_id": d, "online": online, "last_seen_at": p.clock.now()} for d in device_ids],
        )
        await s.commit()


async def test_fifty_viewers_share_one_computation_per_interval(plane: Plane) -> None:
    await plane.add_devices(3)
    hub = LiveHub(plane.sessions, plane.clock)
    district = principal()
    scoped = principal(Role.TECHNICIAN, (plane.school_id,))
    views = await asyncio.gather(*(hub.now(district if i % 2 else scoped) for i in range(50)))
    assert hub.computations == 1
    assert {v.version for v in views} == {1}
    # Viewers with one scope get the very same picture object: filtered once, not once per viewer.
    assert len({id(v) for v in views}) == 2
    await hub.now(district)
    assert hub.computations == 1  # within REFRESH_S: served from the shared picture
    plane.clock.advance(REFRESH_S)
    await asyncio.gather(*(hub.now(district) for _ in range(50)))
    assert hub.computations == 2


async def test_a_viewer_sees_only_its_schools(plane: Plane) -> None:
    b_school, b_room = await second_school(plane)
    hub = LiveHub(plane.sessions, plane.clock)
    a_only = principal(Role.TECHNICIAN, (plane.school_id,))
    view = await hub.now(a_only)
    assert [s.id for s in view.schools] == [plane.school_id]
    assert {r.school_id for r in view.rooms} == {plane.school_id}
    assert {s.id for s in (await hub.now(principal())).schools} == {plane.school_id, b_school}
    with pytest.raises(NotFound):
        await hub.school(a_only, b_school)
    async with plane.sessions() as s:
        with pytest.raises(NotFound):
            await room_detail(hub, s, a_only, b_room)
        detail = await room_detail(hub, s, principal(), b_room)
        for nonsense in (0, -1, 2**40):  # never reaches the driver (PostgreSQL's integer would overflow)
            with pytest.raises(NotFound):
                await room_detail(hub, s, principal(), nonsense)
    assert detail.room.name == "Room B" and detail.school.id == b_school
    assert scope_key(a_only) != scope_key(principal()) == "district"
    assert scope_key(principal(Role.AUDITOR, (plane.school_id,))) == scope_key(a_only)


async def test_online_comes_from_the_database_whoever_ingests(plane: Plane) -> None:
    ids = await plane.add_devices(4)
    hub = LiveHub(plane.sessions, plane.clock)
    who = principal()
    assert (await hub.now(who)).schools[0].online == 0
    stored_at = plane.clock.now()
    await set_online(plane, ids[:3])  # committed by another process: this hub never saw the messages
    plane.clock.advance(REFRESH_S)
    view = await hub.now(who)
    assert view.schools[0].online == 3
    assert view.rooms_of(plane.school_id)[0].online == 3
    assert view.last_message_at is None  # ingest health moves with the slower figures
    plane.clock.advance(SLOW_S)
    assert (await hub.now(who)).last_message_at == stored_at


async def test_expected_online_follows_the_lesson_and_enrolment(plane: Plane) -> None:
    await plane.add_devices(5)
    await plane.enroll([f"TAB-{i:05d}" for i in range(4)])  # one device is placed but never enrolled
    assert plane.clock.now() == LESSON_TIME  # Monday 08:30, inside P1
    hub = LiveHub(plane.sessions, plane.clock)
    school = (await hub.now(principal())).schools[0]
    assert (school.expected, school.enrolled, school.current_period, school.lessons_in_progress) == (
        4,
        4,
        "P1",
        1,
    )
    plane.clock.set(datetime(2026, 9, 7, 12, 0, tzinfo=UTC))  # after the last bell
    plane.clock.advance(SLOW_S)
    school = (await hub.now(principal())).schools[0]
    assert (school.expected, school.current_period, school.lessons_in_progress) == (0, None, 0)


async def test_a_room_added_elsewhere_is_found_at_once(plane: Plane) -> None:
    hub = LiveHub(plane.sessions, plane.clock)
    await hub.now(principal())
    async with plane.sessions() as s:
        room = Room(
            school_id=plane.school_id,
            name="New lab",
            kind="ai_lab",
            capacity=20,
            created_at=plane.clock.now(),
        )
        s.add(room)
        await s.commit()
        detail = await room_detail(hub, s, principal(), int(room.id))
    assert detail.room.name == "New lab" and detail.devices == ()


async def test_a_refresh_wakes_every_waiting_viewer_at_once(plane: Plane) -> None:
    hub = LiveHub(plane.sessions, plane.clock)
    who = principal()
    first = await hub.now(who)
    waiters = [asyncio.create_task(hub.next(who, first.version)) for _ in range(10)]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters)  # nothing new yet: they wait
    plane.clock.advance(REFRESH_S)
    await hub.now(principal(Role.AUDITOR, (plane.school_id,)))  # any viewer's request refreshes
    await asyncio.sleep(0.05)  # far less than PUSH_S: woken by the refresh, not by their timeout
    assert all(w.done() for w in waiters)
    assert {w.result().version for w in waiters} == {first.version + 1}
    assert hub.computations == 2
