"""GET /api/v1/stats/peaks and /stats/live over real SQLite data written by the ingest's own code.

Bytes and presence go through `ingest_repo.apply_batch` (what the ingest writer commits) and the device
plane's batch listener; the concurrency roll-up is the plane's own `rollup_concurrency`. Nothing is inserted
by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from fleet.domain import wire
from fleet.domain.enums import DeviceStatus, Role
from fleet.persistence import ingest_repo
from fleet.persistence.db import unit_of_work
from fleet.persistence.ingest_repo import Inbound
from fleet.persistence.models import Device
from fleet.runtime.plane import DevicePlane
from fleet.services import enrollment
from tests.conftest import Api, make_settings
from tests.factories import build_world, post

TZ = ZoneInfo("Europe/Berlin")
MONDAY = datetime(2026, 9, 7, tzinfo=TZ)  # a Monday in term
HOLIDAY = "2026-10-05"  # a Monday, declared a holiday below
EXAM_DAY = "2026-09-14"  # a Monday, declared an exam day below


def at(hh: int, mm: int, day: datetime = MONDAY) -> datetime:
    return day.replace(hour=hh, minute=mm).astimezone(UTC)


@dataclass
class Site:
    school: int
    code: str
    classroom: int
    lab: int
    serials: list[str]  # enrolled terminals in the classroom (10) then the lab (4)
    plane: DevicePlane
    seq: int = 0


async def _enrolled(api: Api, school: int, room: int, prefix: str, n: int) -> list[str]:
    serials = []
    for i in range(n):
        serial = f"{prefix}-{i:02d}"
        await post(
            api,
            "/api/v1/devices",
            {
                "serial_number": serial,
                "asset_tag": f"AT-{serial}",
                "model_id": await _model(api),
                "school_id": school,
                "room_id": room,
            },
        )
        serials.append(serial)
    async with unit_of_work(api.sessions) as s:
        tok = await enrollment.create_claim_token(
            s,
            school_id=school,
            max_uses=n,
            ttl=timedelta(days=1),
            allow_unknown=False,
            label="t",
            actor="test",
            now=api.clock.now(),
        )
        for serial in serials:
            await enrollment.enroll(
                s,
                claim_token=tok.token,
                serial_number=serial,
                vendor=None,
                model_number=None,
                now=api.clock.now(),
            )
    return serials


_MODEL: dict[int, int] = {}


async def _model(api: Api) -> int:
    if id(api) not in _MODEL:
        _MODEL[id(api)] = (
            await post(
                api,
                "/api/v1/device-models",
                {
                    "vendor": "Acme",
                    "model_number": "T-1",
                    "kind": "terminal",
                    "transport": "mqtt",
                    "unit_price": "100.00",
                    "warranty_months": 24,
                    "supplier": "Acme",
                },
            )
        )["id"]
    return _MODEL[id(api)]


@pytest.fixture
async def site(api: Api) -> AsyncIterator[Site]:
    school = await post(
        api,
        "/api/v1/schools",
        {
            "district_id": (await post(api, "/api/v1/districts", {"name": "Peaks"}))["id"],
            "code": "pk1",
            "name": "Peak School",
            "uplink_mbps": 1,
            "timezone": "Europe/Berlin",
        },
    )
    sid = school["id"]
    classroom = (
        await post(api, "/api/v1/rooms", {"school_id": sid, "name": "C1", "kind": "smart_classroom"})
    )["id"]
    lab = (
        await post(
            api,
            "/api/v1/rooms",
            {"school_id": sid, "name": "Lab", "kind": "ai_lab", "tier": "basic_experience"},
        )
    )["id"]
    for name, start, end in (("P1", "08:00", "08:45"), ("P2", "08:55", "09:40"), ("P3", "10:00", "10:45")):
        await post(
            api,
            "/api/v1/bell-periods",
            {"school_id": sid, "weekday": 0, "name": name, "start_time": start, "end_time": end},
        )
    # The lab keeps its own timetable: only a Monday 10:00 session, so it is expected in P3 and not before.
    await post(
        api,
        "/api/v1/bell-periods",
        {
            "school_id": sid,
            "room_id": lab,
            "weekday": 0,
            "name": "Lab",
            "start_time": "10:00",
            "end_time": "10:45",
        },
    )
    for kind, name, start, end in (
        ("term", "Autumn", "2026-09-01", "2027-01-31"),
        ("holiday", "Unity Day", HOLIDAY, HOLIDAY),
        ("exam_day", "Maths exam", EXAM_DAY, EXAM_DAY),
    ):
        await post(
            api,
            "/api/v1/calendar-entries",
            {"school_id": sid, "kind": kind, "name": name, "start_date": start, "end_date": end},
        )
    serials = await _enrolled(api, sid, classroom, "PKC", 10) + await _enrolled(api, sid, lab, "PKL", 4)
    # Placed but never enrolled, and enrolled but revoked: neither is expected online.
    await post(
        api,
        "/api/v1/devices",
        {
            "serial_number": "PK-NOMQTT",
            "asset_tag": "AT-PK-NOMQTT",
            "model_id": await _model(api),
            "school_id": sid,
            "room_id": classroom,
        },
    )
    revoked = await _enrolled(api, sid, classroom, "PKR", 1)
    async with unit_of_work(api.sessions) as s:
        from sqlalchemy import select, update

        from fleet.persistence.models_mqtt import DeviceCredential

        dev = (await s.execute(select(Device.id).where(Device.serial_number == revoked[0]))).scalar_one()
        await s.execute(
            update(DeviceCredential)
            .where(DeviceCredential.device_id == dev)
            .values(revoked_at=api.clock.now())
        )
    settings = make_settings(
        api.sessions.kw["bind"].url.render_as_string(hide_password=False), mqtt={"broker": "none"}
    )
    async with DevicePlane(settings, api.sessions, api.clock) as plane:
        yield Site(sid, "pk1", classroom, lab, serials, plane)


async def ingest(site: Site, when: datetime, values: dict[str, list[wire.Uplink]]) -> None:
    """Commit uplink messages through the ingest writer's code path, and feed the plane's listener."""
    items = []
    for serial, vals in values.items():
        ref = site.plane.directory.get(serial)
        assert ref is not None, serial
        items += [Inbound(ref, _channel(v), v, when) for v in vals]
    async with site.plane.sessions() as s:
        outcome = await ingest_repo.apply_batch(
            s,
            items,
            [],
            now=when,
            pseudonym_key="k",
            expected_offline=site.plane.timetables.expected_offline,
            dead_letters_max=100,
        )
        await s.commit()
    site.plane._on_batch(outcome)


def _channel(v: wire.Uplink) -> wire.Channel:
    return {
        wire.Telemetry: wire.Channel.TELEMETRY,
        wire.Status: wire.Channel.STATUS,
        wire.Event: wire.Channel.EVENT,
    }[type(v)]


def telemetry(site: Site, up: int, down: int) -> wire.Telemetry:
    site.seq += 1
    return wire.Telemetry(seq=site.seq, ts_ms=site.seq, bytes_up=up, bytes_down=down)


def login(site: Site, user: str) -> wire.Event:
    site.seq += 1
    return wire.Event(seq=site.seq, ts_ms=site.seq, type=wire.EventType.LOGIN, user=user)


async def _morning(api: Api, site: Site) -> None:
    """P1: 8 classroom terminals come online at 08:05, three students sign in; two drop off at 08:20."""
    online = site.serials[:8]
    api.clock.set(at(8, 5))
    await ingest(site, at(8, 5), {s: [wire.Status(True)] for s in online})
    await ingest(site, at(8, 6), {s: [login(site, f"student-{i}")] for i, s in enumerate(online[:3])})
    await site.plane.rollup_concurrency(at(8, 6))
    # 08:10-08:15 bucket: 8 x (30,000 up + 7,500 down) = 300,000 B over 300 s = 1,000 B/s.
    await ingest(site, at(8, 11), {s: [telemetry(site, 30_000, 7_500)] for s in online})
    # 08:20-08:25 bucket: twice that, the period's peak: 2,000 B/s, 1,600 of it up.
    await ingest(site, at(8, 21), {s: [telemetry(site, 60_000, 15_000)] for s in online})
    await ingest(site, at(8, 22), {s: [wire.Status(False, reason="shutdown")] for s in online[:2]})
    await site.plane.rollup_concurrency(at(8, 22))  # six online now: the recorded peak stays eight


async def test_peaks_per_period_from_the_ingest_roll_ups(api: Api, site: Site) -> None:
    await _morning(api, site)
    api.clock.set(at(9, 0))
    r = await api.client.get(
        "/api/v1/stats/peaks",
        params={"school": site.code, "date": "2026-09-07"},
        headers=await api.as_(Role.IT_STAFF, (site.school,)),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["school"]["code"] == "pk1" and body["school"]["uplink_mbps"] == 1
    assert body["day"]["kind"] == "school_day" and body["day"]["in_term"] and not body["day"]["holiday"]
    assert body["bucket_seconds"] == 300
    assert body["devices_placed"] == 14
    p1, p2, p3 = body["periods"]
    assert [p["name"] for p in (p1, p2, p3)] == ["P1", "P2", "P3"]
    assert p1["start"] == "2026-09-07T08:00:00+02:00" and p1["end"] == "2026-09-07T08:45:00+02:00"
    assert (p1["status"], p2["status"], p3["status"]) == ("past", "in_progress", "upcoming")
    # P1: the classroom only (the lab keeps its own 10:00 timetable); the unenrolled and revoked devices don't
    # count.
    assert p1["lesson"] and p1["rooms_in_lesson"] == 1 and p1["expected_online"] == 10
    assert p1["peak_online"] == 8 and p1["peak_sessions"] == 3 and p1["online_vs_expected_pct"] == 80.0
    assert p1["peak_bytes_per_second"] == 2000.0
    assert p1["peak_up_bytes_per_second"] == 1600.0 and p1["peak_down_bytes_per_second"] == 400.0
    assert p1["peak_bucket_start"] == "2026-09-07T06:20:00Z"
    # 1,600 B/s up = 12,800 bit/s of a 1 Mbit/s uplink.
    assert p1["uplink_utilisation_pct"] == 1.28
    assert p1["bytes_up"] == 8 * 90_000 and p1["bytes_down"] == 8 * 22_500
    # P2 recorded nothing yet; P3 has both rooms in lesson.
    assert (
        p2["peak_online"] is None
        and p2["peak_bytes_per_second"] is None
        and p2["uplink_utilisation_pct"] is None
    )
    assert p2["expected_online"] == 10 and p2["bytes_up"] == 0
    assert p3["rooms_in_lesson"] == 2 and p3["expected_online"] == 14


async def test_a_period_in_progress_divides_its_filling_bucket_by_the_seconds_elapsed(
    api: Api, site: Site
) -> None:
    api.clock.set(at(8, 30))
    await ingest(site, at(8, 30), {s: [wire.Status(True)] for s in site.serials[:4]})
    await ingest(site, at(8, 31), {s: [telemetry(site, 12_000, 0)] for s in site.serials[:4]})
    api.clock.set(at(8, 32))  # 120 s into the 08:30 bucket: 48,000 B / 120 s
    body = (
        await api.client.get(
            "/api/v1/stats/peaks", params={"school": str(site.school)}, headers=await api.admin()
        )
    ).json()
    assert body["day"]["local_date"] == "2026-09-07"
    p1 = body["periods"][0]
    assert p1["status"] == "in_progress" and p1["peak_bytes_per_second"] == 400.0


async def test_holidays_show_the_bell_periods_without_lessons_and_exam_days_with_them(
    api: Api, site: Site
) -> None:
    h = await api.admin()
    holiday = (
        await api.client.get("/api/v1/stats/peaks", params={"school": "pk1", "date": HOLIDAY}, headers=h)
    ).json()
    assert holiday["day"]["kind"] == "holiday" and holiday["day"]["holiday"]
    assert [c["name"] for c in holiday["day"]["calendar"]] == ["Autumn", "Unity Day"]
    assert [(p["name"], p["lesson"], p["expected_online"]) for p in holiday["periods"]] == [
        ("P1", False, 0),
        ("P2", False, 0),
        ("P3", False, 0),
    ]
    exam = (
        await api.client.get("/api/v1/stats/peaks", params={"school": "pk1", "date": EXAM_DAY}, headers=h)
    ).json()
    assert exam["day"]["kind"] == "exam_day" and exam["day"]["exam_day"]
    assert exam["periods"][0]["lesson"] and exam["periods"][0]["expected_online"] == 10
    sunday = (
        await api.client.get("/api/v1/stats/peaks", params={"school": "pk1", "date": "2026-09-13"}, headers=h)
    ).json()
    assert sunday["day"]["kind"] == "no_periods" and sunday["periods"] == []
    summer = (
        await api.client.get("/api/v1/stats/peaks", params={"school": "pk1", "date": "2026-08-03"}, headers=h)
    ).json()
    assert summer["day"]["kind"] == "outside_term" and not summer["periods"][0]["lesson"]


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"school": "pk1", "date": "2026-13-40"}, 422, "date"),
        ({"school": "pk1", "date": "yesterday"}, 422, "date"),
        ({"school": "pk1", "date": "1900-01-01"}, 422, "years from today"),
        ({}, 422, "school"),
        ({"school": "pk1; drop table"}, 422, "school"),
        ({"school": "no-such-school"}, 404, "school no-such-school not found"),
        ({"school": "999999"}, 404, "school 999999 not found"),
    ],
)
async def test_bad_input_is_a_clear_error_never_a_500(
    api: Api, site: Site, params: dict[str, str], status: int, message: str
) -> None:
    r = await api.client.get("/api/v1/stats/peaks", params=params, headers=await api.admin())
    assert r.status_code == status, r.text
    assert message in r.json()["message"]


async def test_live_overview_reads_the_rollup_and_alerts_within_scope(api: Api, site: Site) -> None:
    w = await build_world(api)
    await _morning(api, site)
    api.clock.set(at(8, 24))  # 240 s into the 08:20 bucket
    r = await api.client.get("/api/v1/stats/live", headers=await api.as_(Role.AUDITOR, (site.school,)))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [s["code"] for s in body["schools"]] == ["pk1"]  # school-a and school-b are outside the token
    pk1 = body["schools"][0]
    assert body["rate_window_seconds"] == 240.0
    assert pk1["bytes_per_second"] == 8 * 75_000 / 240 and pk1["up_bytes_per_second"] == 8 * 60_000 / 240
    assert pk1["online"] is None and body["snapshot_age_seconds"] is None  # no fleet snapshot in this app
    everyone = (await api.client.get("/api/v1/stats/live", headers=await api.admin())).json()
    assert {s["id"] for s in everyone["schools"]} == {site.school, w.school_a, w.school_b}
    # This process's ingest figures (no broker in this app: not connected, nothing ingested).
    assert everyone["ingest"]["broker_connected"] is False and everyone["ingest"]["messages"] == {}


async def test_live_in_service_counts_lifecycle_status_not_mqtt_logins(api: Api, site: Site) -> None:
    """Issue 20: `labfleet top` showed 0 in service for 117 devices in service: it counted credentials."""
    async with unit_of_work(api.sessions) as s:
        devices = (
            (await s.execute(select(Device).where(Device.serial_number.in_(site.serials)))).scalars().all()
        )
        for d in devices[:3]:
            d.status = DeviceStatus.IN_SERVICE.value
        for d in devices[3:]:
            d.status = DeviceStatus.IN_REPAIR.value  # enrolled, holding an MQTT login, not in service
    body = (await api.client.get("/api/v1/stats/live", headers=await api.admin())).json()
    pk1 = next(s for s in body["schools"] if s["code"] == "pk1")
    assert pk1["in_service"] == 3
