"""Asset labels as a technician gets them: the PDF from POST /api/v1/labels is rasterised and every QR code on
it decoded; each selected device is found exactly once, inside its die-cut on the sheet, and nothing else is
printed; the Chinese school name is in the text layer. Then the refusals (422 naming the field, 404 outside
one's schools) and the audit record."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from fleet.domain.asset_labels import SHEETS
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import School
from tests.conftest import Api
from tests.csvgen import delivery_csv
from tests.factories import World, build_world, post
from tests.labels.qr import decode_pdf, need_tools, page_size_pts, pdf_text

V1 = "/api/v1"
SCHOOL_ZH = "第一实验小学"
MM_PER_PT = 25.4 / 72
# 26 devices: more than one 3x8 sheet (24), two 2x7 sheets (14) - so page breaks and pitch are exercised.
ROOM_DEVICES = 26


async def labelled_world(api: Api) -> tuple[World, dict[str, int], int]:
    """School A renamed in Chinese, a second room in it with 26 devices (asset tag -> id); its first room
    keeps the world's one device (a room selection leaves it out). Returns world, devices, room."""
    w = await build_world(api)
    async with unit_of_work(api.sessions) as s:
        await s.execute(update(School).where(School.id == w.school_a).values(name=SCHOOL_ZH))
    room = await post(
        api,
        f"{V1}/rooms",
        {"school_id": w.school_a, "name": "创客实验室", "kind": "ai_lab", "tier": "basic_experience"},
    )
    devices = {}
    for i in range(ROOM_DEVICES):
        d = await post(
            api,
            f"{V1}/devices",
            {
                "serial_number": f"SN-LBL-{i:04d}",
                "asset_tag": f"ZX-{i:04d}",
                "model_id": w.model,
                "school_id": w.school_a,
                "room_id": room["id"],
            },
        )
        devices[d["asset_tag"]] = d["id"]
    return w, devices, room["id"]


async def labels(api: Api, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return await api.client.post(f"{V1}/labels", json=body, headers=headers or await api.admin())


@pytest.mark.parametrize("layout", list(SHEETS))
async def test_every_device_of_a_room_is_on_the_sheet_exactly_once_inside_its_label(
    api: Api, tmp_path: Path, layout: str
) -> None:
    need_tools()
    _w, devices, room = await labelled_world(api)
    r = await labels(api, {"room": room, "layout": layout, "lang": "zh-CN"})
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"] == "application/pdf"
    assert r.headers["x-label-count"] == str(ROOM_DEVICES)
    sheet = SHEETS[layout]

    w_pt, h_pt = await asyncio.to_thread(page_size_pts, r.content, tmp_path)
    assert abs(w_pt * MM_PER_PT - sheet.page_w) < 0.5 and abs(h_pt * MM_PER_PT - sheet.page_h) < 0.5

    found = await asyncio.to_thread(decode_pdf, r.content, tmp_path)
    expected = {f"http://test/devices/{dev_id}": tag for tag, dev_id in devices.items()}
    assert Counter(f.text for f in found) == Counter(list(expected)), (
        "every selected device exactly once, no other"
    )
    assert max(f.page for f in found) + 1 == sheet.pages(ROOM_DEVICES)

    # Each code sits where the sheet's die-cut puts its slot (labels in asset-tag order, slot by slot): a
    # square at the label's left, centred half a label height in from its top-left corner, within 0.5 mm.
    order = sorted(expected, key=lambda url: expected[url])
    for f in found:
        page, x, y = sheet.position(order.index(f.text))
        assert f.page == page, f
        centre = (x + sheet.label_h / 2, y + sheet.label_h / 2)
        assert abs(f.x_mm - centre[0]) < 0.5 and abs(f.y_mm - centre[1]) < 0.5, (f, centre)

    text = await asyncio.to_thread(pdf_text, r.content, tmp_path)
    assert text.count(SCHOOL_ZH) == ROOM_DEVICES
    for tag in devices:
        assert tag in text
    assert "SN-LBL-0007" in text and "AT-a-1" not in text  # the school's other room is not selected


def test_the_sheets_match_the_label_stock_they_name() -> None:
    """The die-cut geometry of the documented stock (fleet/domain/asset_labels.py): label size, and the labels
    centred on A4 with equal margins, so a sheet fed either way up prints inside its labels."""
    for code, size, count in (("3x8", (63.5, 33.9), 24), ("2x7", (99.1, 38.1), 14)):
        s = SHEETS[code]
        assert (s.label_w, s.label_h, s.per_page, s.page_w, s.page_h) == (*size, count, 210.0, 297.0)
        right = s.page_w - (s.left + (s.columns - 1) * s.pitch_x + s.label_w)
        bottom = s.page_h - (s.top + (s.rows - 1) * s.pitch_y + s.label_h)
        assert abs(right - s.left) < 0.2 and abs(bottom - s.top) < 0.01, code
        assert s.pitch_x >= s.label_w and s.pitch_y >= s.label_h, code
    roll = SHEETS["roll50x30"]
    assert (roll.page_w, roll.page_h, roll.per_page, roll.position(3)) == (50.0, 30.0, 1, (3, 0.0, 0.0))


def test_a_long_code_is_set_smaller_to_stay_on_one_line_and_wraps_only_past_the_smallest_size() -> None:
    from fleet.services.asset_labels import MIN_PT, fit_pt

    assert fit_pt("ZX-0001", 28.0, 9.0) == (9.0, True)
    size, one_line = fit_pt("C02XK1ABCDEFGHJ123456789", 28.0, 9.0)
    assert one_line and MIN_PT <= size < 9.0
    assert fit_pt("X" * 64, 19.0, 7.5) == (MIN_PT, False)


async def test_a_delivery_prints_the_devices_of_that_import_only_with_asset_tags_in_the_codes(
    api: Api, tmp_path: Path
) -> None:
    need_tools()
    await build_world(api)
    first = await api.client.post(
        f"{V1}/imports/devices",
        files={"file": ("d1.csv", delivery_csv(9, prefix="ONE"), "text/csv")},
        headers=await api.admin(),
    )
    assert first.status_code == 201, first.text
    api.clock.advance(60)
    second = await api.client.post(
        f"{V1}/imports/devices",
        files={"file": ("d2.csv", delivery_csv(5, prefix="TWO"), "text/csv")},
        headers=await api.admin(),
    )
    assert second.status_code == 201, second.text
    log = await api.client.get(f"{V1}/audit", params={"action": "import.devices"}, headers=await api.admin())
    deliveries = sorted(e["id"] for e in log.json()["items"])
    assert len(deliveries) == 2

    r = await labels(api, {"delivery": deliveries[0], "content": "tag", "layout": "2x7"})
    assert r.status_code == 200, r.text[:500]
    found = await asyncio.to_thread(decode_pdf, r.content, tmp_path)
    assert Counter(f.text for f in found) == Counter(f"ONE-TAG-{i:06d}" for i in range(1, 10))

    # A delivery narrowed by the other filters: its devices that are still `received`, and a listed one.
    r = await labels(api, {"delivery": deliveries[1], "serials": ["TWO-000002", "TWO-TAG-000004"]})
    assert r.status_code == 200 and r.headers["x-label-count"] == "2"


async def test_a_search_and_an_explicit_list_select_exactly_their_devices(api: Api, tmp_path: Path) -> None:
    need_tools()
    _w, devices, _room = await labelled_world(api)
    r = await labels(api, {"q": "ZX-001", "layout": "roll50x30", "base_url": "https://fleet.example.edu.cn/"})
    assert r.status_code == 200, r.text[:300]
    found = await asyncio.to_thread(decode_pdf, r.content, tmp_path)
    assert sorted(f.text for f in found) == sorted(
        f"https://fleet.example.edu.cn/devices/{devices[f'ZX-{i:04d}']}" for i in range(10, 20)
    )
    assert {f.page for f in found} == set(range(10))  # one label per page of the roll


async def test_refusals_name_the_field_and_other_schools_stay_invisible(api: Api) -> None:
    w, _devices, room = await labelled_world(api)
    r = await labels(api, {"layout": "3x8"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "selection"
    for blank in ({"serials": [" ", "\t"]}, {"q": "   "}):  # blank choices never mean "every device"
        r = await labels(api, blank)
        assert r.status_code == 422 and r.json()["details"][0]["field"] == "selection", blank
    r = await labels(api, {"serials": ["ZX-0001", "NOPE-1"]})
    assert r.status_code == 422 and "NOPE-1" in r.json()["message"]
    assert r.json()["details"][0]["field"] == "serials"
    r = await labels(api, {"room": room, "layout": "4x10"})
    assert r.status_code == 422
    r = await labels(api, {"room": w.room_a, "status": "lost"})  # a room with no lost device
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "selection"

    tech_b = await api.as_("technician", (w.school_b,))
    assert (await labels(api, {"room": room}, tech_b)).status_code == 404
    assert (await labels(api, {"school": w.school_a}, tech_b)).status_code == 404
    # a listed device of another school reads as unknown, not as "not yours"
    r = await labels(api, {"serials": ["ZX-0001"]}, tech_b)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "serials"
    auditor = await api.as_("auditor")
    assert (await labels(api, {"room": room}, auditor)).status_code == 403


async def test_printing_is_recorded_in_the_audit_log(api: Api) -> None:
    w, _devices, room = await labelled_world(api)
    tech = await api.as_("technician", (w.school_a,))
    r = await labels(api, {"room": room, "content": "tag", "layout": "2x7"}, tech)
    assert r.status_code == 200, r.text[:300]
    log = await api.client.get(f"{V1}/audit", params={"action": "labels.print"}, headers=await api.admin())
    entry = log.json()["items"][0]
    assert entry["after"] == {"count": ROOM_DEVICES, "layout": "2x7", "content": "tag", "room": room}
    assert entry["actor"].startswith("token:") or entry["actor"]
