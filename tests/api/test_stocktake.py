"""Room stocktake (issue 21, point 2) through the API and its service, on SQLite and PostgreSQL: the network
pre-marks only what reported from the room today (school time zone), labels and typed tags find devices,
a device of another room is unexpected, differences are settled through the lifecycle with a reason, and
finishing writes who, when, found, missing and moved to the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from fleet.domain.clock import FakeClock
from fleet.domain.stocktake import WindowChoice, parse_code, window
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import AuditEntry, Device, DeviceTransition, School
from fleet.persistence.models_mqtt import DeviceState, UsageActive
from tests.conftest import Api
from tests.factories import World, build_world, post

V1 = "/api/v1"
# The fixture clock: 2026-09-07 07:55 UTC, 15:55 in Shanghai, whose day began at 2026-09-06 16:00 UTC.
SHANGHAI_MIDNIGHT = datetime(2026, 9, 6, 16, 0, tzinfo=UTC)


async def _device(api: Api, w: World, tag: str, room: int | None, school: int | None = None) -> int:
    body: dict[str, Any] = {
        "serial_number": f"SN-{tag}",
        "asset_tag": tag,
        "model_id": w.model,
        "school_id": school or w.school_a,
        "status": "in_service",
    }
    if room is not None:
        body["room_id"] = room
    return int((await post(api, f"{V1}/devices", body))["id"])


async def room_with_devices(api: Api) -> tuple[World, dict[str, int]]:
    """Room 1 of school A (Shanghai time) holds AT-a-1 and four more; Lab 2 holds one that wanders."""
    w = await build_world(api)
    async with unit_of_work(api.sessions) as s:
        await s.execute(update(School).where(School.id == w.school_a).values(timezone="Asia/Shanghai"))
    lab = (await post(api, f"{V1}/rooms", {"school_id": w.school_a, "name": "Lab 2", "kind": "digital_lab"}))[
        "id"
    ]
    ids = {"a1": w.device_a, "lab": lab}
    for tag in ("heard", "alive", "yesterday", "silent"):
        ids[tag] = await _device(api, w, f"AT-{tag}", w.room_a)
    ids["wanderer"] = await _device(api, w, "AT-wanderer", lab)
    ids["retired"] = await _device(api, w, "AT-retired", w.room_a)
    async with unit_of_work(api.sessions) as s:
        await s.execute(update(Device).where(Device.id == ids["retired"]).values(status="retired"))
        # heard: an active minute booked to Room 1 in the 16:00 UTC bucket (00:xx in Shanghai, today).
        s.add(
            UsageActive(
                device_id=ids["heard"],
                school_id=w.school_a,
                room_id=w.room_a,
                bucket_start=SHANGHAI_MIDNIGHT,
                active_minutes=3,
            )
        )
        # yesterday: its last activity was in the 15:00 UTC bucket, 23:xx in Shanghai the day before.
        s.add(
            UsageActive(
                device_id=ids["yesterday"],
                school_id=w.school_a,
                room_id=w.room_a,
                bucket_start=datetime(2026, 9, 6, 15, 0, tzinfo=UTC),
                active_minutes=5,
            )
        )
        s.add(DeviceState(device_id=ids["yesterday"], last_seen_at=datetime(2026, 9, 6, 15, 59, tzinfo=UTC)))
        # alive: a status message an hour ago (no active minute), still a sign of life today.
        s.add(DeviceState(device_id=ids["alive"], last_seen_at=datetime(2026, 9, 7, 6, 55, tzinfo=UTC)))
        # the wanderer reported today, but from Lab 2: it does not make Room 1's count.
        s.add(
            UsageActive(
                device_id=ids["wanderer"],
                school_id=w.school_a,
                room_id=lab,
                bucket_start=datetime(2026, 9, 7, 7, 0, tzinfo=UTC),
                active_minutes=1,
            )
        )
    return w, ids


def lines(body: dict[str, Any]) -> dict[str, tuple[str, bool, bool, str | None]]:
    return {
        x["asset_tag"]: (x["status"], x["seen_by_network"], x["scanned_at"] is not None, x["resolution"])
        for x in body["lines"]
    }


def test_a_label_names_a_device_by_its_console_url_or_carries_a_tag() -> None:
    assert parse_code("https://fleet.example.cn/devices/42") == parse_code(
        "https://fleet.example.cn/devices/42"
    )
    found = parse_code(" https://fleet.example.cn/devices/42?from=label ")
    assert found is not None and found.device_id == 42
    assert parse_code("/devices/7").device_id == 7  # type: ignore[union-attr]
    tag = parse_code("AT-0042")
    assert tag is not None and tag.device_id is None and tag.text == "AT-0042"
    assert parse_code("https://fleet.example.cn/devices/42/commands/x") is not None
    assert parse_code("https://fleet.example.cn/devices/42/commands/x").device_id is None  # type: ignore[union-attr]
    assert parse_code("   ") is None and parse_code("x" * 301) is None


def test_today_begins_at_midnight_in_the_schools_time_zone() -> None:
    now = datetime(2026, 9, 7, 7, 55, tzinfo=UTC)
    assert window(WindowChoice.TODAY, now, "Asia/Shanghai") == (SHANGHAI_MIDNIGHT, now)
    assert window(WindowChoice.TODAY, now, "UTC") == (datetime(2026, 9, 7, tzinfo=UTC), now)
    start, _end = window(WindowChoice.WEEK, now, "Asia/Shanghai")  # type: ignore[misc]
    assert start == datetime(2026, 8, 31, 16, 0, tzinfo=UTC)
    assert window(WindowChoice.NONE, now, "UTC") is None


async def test_the_network_pre_marks_only_devices_heard_from_this_room_today(api_any: Api) -> None:
    api = api_any
    w, _ids = await room_with_devices(api)
    tech = await api.as_("technician", (w.school_a,))
    r = await api.client.post(f"{V1}/stocktakes", json={"room_id": w.room_a}, headers=tech)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["window_start"] == "2026-09-06T16:00:00+00:00"
    assert body["window_end"] == "2026-09-07T07:55:00+00:00"
    # The retired device is not expected; the wanderer belongs to Lab 2.
    assert lines(body) == {
        "AT-a-1": ("missing", False, False, None),
        "AT-alive": ("found", True, False, None),
        "AT-heard": ("found", True, False, None),
        "AT-silent": ("missing", False, False, None),
        "AT-yesterday": ("missing", False, False, None),
    }
    assert body["tally"]["expected"] == 5 and body["tally"]["seen_by_network"] == 2
    # Without network pre-marks, every device is counted by hand.
    r = await api.client.post(f"{V1}/stocktakes", json={"room_id": w.room_a, "window": "none"}, headers=tech)
    assert {v[0] for v in lines(r.json()).values()} == {"missing"}


async def test_scanning_labels_and_typed_tags_then_settling_and_finishing(api_any: Api) -> None:
    api = api_any
    clock: FakeClock = api.clock
    w, ids = await room_with_devices(api)
    tech = await api.as_("technician", (w.school_a,))
    st = (await api.client.post(f"{V1}/stocktakes", json={"room_id": w.room_a}, headers=tech)).json()["id"]

    async def scan(code: str) -> Any:
        clock.advance(5)
        return await api.client.post(f"{V1}/stocktakes/{st}/scans", json={"code": code}, headers=tech)

    # A label's console URL, a typed asset tag, a typed serial number.
    r = await scan(f"http://labfleet.school.cn/devices/{ids['a1']}")
    assert r.status_code == 200 and r.json() == {
        "outcome": "found",
        "device_id": ids["a1"],
        "asset_tag": "AT-a-1",
    }
    assert (await scan("AT-silent")).json()["outcome"] == "found"
    assert (await scan("AT-silent")).json()["outcome"] == "already"
    assert (await scan("SN-AT-yesterday")).json()["outcome"] == "found"
    assert (await scan("AT-wanderer")).json()["outcome"] == "unexpected"
    # Unknown, and another school's device: the same answer, beside the field.
    for code in ("AT-nothing", "AT-b-1", f"/devices/{w.device_b}"):
        r = await scan(code)
        assert r.status_code == 422 and r.json()["details"][0]["field"] == "code", (code, r.text)
    assert (await scan("")).status_code == 422

    view = (await api.client.get(f"{V1}/stocktakes/{st}", headers=tech)).json()
    assert lines(view) == {
        "AT-a-1": ("found", False, True, None),
        "AT-alive": ("found", True, False, None),
        "AT-heard": ("found", True, False, None),
        "AT-silent": ("found", False, True, None),
        "AT-yesterday": ("found", False, True, None),
        "AT-wanderer": ("unexpected", False, True, None),
    }
    assert next(x for x in view["lines"] if x["asset_tag"] == "AT-wanderer")["home_room"] == "Lab 2"

    # A second count with a silent device missing: mark it lost; move the wanderer here.
    resolve = f"{V1}/stocktakes/{st}/devices/{ids['wanderer']}/resolve"
    r = await api.client.post(resolve, json={"action": "moved_here", "reason": ""}, headers=tech)
    assert r.status_code == 422
    r = await api.client.post(resolve, json={"action": "marked_lost", "reason": "x"}, headers=tech)
    assert r.status_code == 409  # only a missing device can be marked lost
    r = await api.client.post(
        resolve, json={"action": "moved_here", "reason": "found on the shelf"}, headers=tech
    )
    assert r.status_code == 200, r.text
    assert lines(r.json())["AT-wanderer"] == ("unexpected", False, True, "moved_here")

    clock.advance(60)
    r = await api.client.post(f"{V1}/stocktakes/{st}/finish", headers=tech)
    assert r.status_code == 200 and r.json()["finished_at"] == "2026-09-07T07:56:45+00:00"
    assert (await scan("AT-heard")).status_code == 409  # a finished count does not change

    second = (
        await api.client.post(f"{V1}/stocktakes", json={"room_id": w.room_a, "window": "none"}, headers=tech)
    ).json()
    assert "AT-wanderer" in lines(second)  # it belongs here now
    await api.client.post(f"{V1}/stocktakes/{second['id']}/scans", json={"code": "AT-heard"}, headers=tech)
    r = await api.client.post(
        f"{V1}/stocktakes/{second['id']}/devices/{ids['silent']}/resolve",
        json={"action": "marked_lost", "reason": "not in the room twice"},
        headers=tech,
    )
    assert r.status_code == 200 and lines(r.json())["AT-silent"] == ("missing", False, False, "marked_lost")
    await api.client.post(f"{V1}/stocktakes/{second['id']}/finish", headers=tech)

    async with api.sessions() as s:
        wanderer = await s.get(Device, ids["wanderer"])
        silent = await s.get(Device, ids["silent"])
        assert wanderer is not None and wanderer.room_id == w.room_a
        assert silent is not None and silent.status == "lost"
        reasons = (
            await s.execute(
                select(DeviceTransition.to_status, DeviceTransition.reason).where(
                    DeviceTransition.device_id == ids["silent"], DeviceTransition.to_status == "lost"
                )
            )
        ).all()
        assert reasons == [("lost", "not in the room twice")]
        entries = (
            (
                await s.execute(
                    select(AuditEntry)
                    .where(AuditEntry.action.in_(("stocktake.finish", "device.move")))
                    .order_by(AuditEntry.seq)
                )
            )
            .scalars()
            .all()
        )
    move, first_finish, second_finish = entries
    assert move.action == "device.move" and move.summary == "found on the shelf"
    assert move.before == {"school_id": w.school_a, "room_id": ids["lab"]}
    assert first_finish.actor.startswith("token:") and first_finish.at == datetime(
        2026, 9, 7, 7, 56, 45, tzinfo=UTC
    )
    assert {k: first_finish.after[k] for k in ("found", "missing", "unexpected", "moved", "lost")} == {  # type: ignore[index]
        "found": 5,
        "missing": 0,
        "unexpected": 1,
        "moved": 1,
        "lost": 0,
    }
    # Second count, no network: a1, alive, yesterday, wanderer unscanned; heard scanned; silent lost.
    assert {k: second_finish.after[k] for k in ("found", "missing", "moved", "lost")} == {  # type: ignore[index]
        "found": 1,
        "missing": 5,
        "moved": 0,
        "lost": 1,
    }


async def test_roles_and_schools_decide_who_counts_which_room(api_any: Api) -> None:
    api = api_any
    w, _ids = await room_with_devices(api)
    tech_a = await api.as_("technician", (w.school_a,))
    r = await api.client.post(f"{V1}/stocktakes", json={"room_id": w.room_a}, headers=tech_a)
    st = r.json()["id"]
    tech_b = await api.as_("technician", (w.school_b,))
    auditor_a = await api.as_("auditor", (w.school_a,))
    assert (
        await api.client.post(f"{V1}/stocktakes", json={"room_id": w.room_a}, headers=tech_b)
    ).status_code == 404
    assert (await api.client.get(f"{V1}/stocktakes/{st}", headers=tech_b)).status_code == 404
    assert (await api.client.get(f"{V1}/stocktakes/{st}", headers=auditor_a)).status_code == 200
    assert (
        await api.client.post(f"{V1}/stocktakes", json={"room_id": w.room_a}, headers=auditor_a)
    ).status_code == 403
    r = await api.client.post(f"{V1}/stocktakes/{st}/scans", json={"code": "AT-heard"}, headers=auditor_a)
    assert r.status_code == 403
    listed = (await api.client.get(f"{V1}/stocktakes", headers=tech_b)).json()
    assert listed == []
    listed = (await api.client.get(f"{V1}/stocktakes", params={"room": w.room_a}, headers=auditor_a)).json()
    assert [(x["id"], x["room"], x["finished_at"]) for x in listed] == [(st, "Room 1", None)]
    assert listed[0]["started_at"] == "2026-09-07T07:55:00+00:00"
    r = await api.client.post(
        f"{V1}/stocktakes", json={"room_id": w.room_a, "window": "month"}, headers=tech_a
    )
    assert r.status_code == 422


def test_what_a_printed_label_carries_names_its_device() -> None:
    """The scanner reads what fleet.domain.asset_labels prints: the console URL (also under a path prefix)
    or the asset tag."""
    from fleet.domain.asset_labels import LabelContent, qr_payload

    for base in ("https://fleet.school.cn/", "https://district.cn/labfleet"):
        url = parse_code(qr_payload(LabelContent.URL, "AT-7", 7, base))
        assert url is not None and url.device_id == 7, base
    tag = parse_code(qr_payload(LabelContent.TAG, "AT-7", 7, ""))
    assert tag is not None and (tag.device_id, tag.text) == (None, "AT-7")
