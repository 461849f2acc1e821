"""Printing labels in a real browser: a technician opens a room, follows "Print labels", picks the 2 x 7 sheet
and gets the PDF as a download; every QR code in it opens that room's devices on this console, each once. A
typed serial that is unknown is refused beside the field; the search's filters carry over to the form."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from fleet.domain.enums import Role
from tests.console.conftest import LiveServer, Tab
from tests.console.test_browser_pages import sign_in, world_with_user
from tests.factories import post
from tests.labels.qr import decode_pdf, need_tools

V1 = "/api/v1"


def test_a_technician_prints_a_rooms_labels_from_the_room_page(
    live_server: LiveServer, tab: Tab, tmp_path: Path
) -> None:
    need_tools()
    tab.base = live_server.url
    w = world_with_user(live_server, "tech-a", Role.TECHNICIAN, "a")

    async def more_devices(api: Any) -> dict[int, str]:
        ids = {w.device_a: "AT-a-1"}
        for i in range(4):
            d = await post(
                api,
                f"{V1}/devices",
                {
                    "serial_number": f"SN-BR-{i}",
                    "asset_tag": f"BR-{i}",
                    "model_id": w.model,
                    "school_id": w.school_a,
                    "room_id": w.room_a,
                },
            )
            ids[d["id"]] = d["asset_tag"]
        return ids

    devices = live_server.run(more_devices)
    sign_in(tab, "tech-a")
    tab.go(f"/cockpit/rooms/{w.room_a}")
    tab.page.locator("#print-room-labels").click()
    tab.page.wait_for_url(f"**/labels?room={w.room_a}")
    assert "5 devices selected." in tab.page.locator("#label-count").inner_text()
    tab.shot("form")
    tab.page.get_by_label("A4 sheet, 2 × 7 labels").check()
    with tab.page.expect_download() as info:
        tab.page.locator("#print-labels").click()
    download = info.value
    assert download.suggested_filename == "labels-2x7-5.pdf"
    pdf = Path(download.path()).read_bytes()
    found = decode_pdf(pdf, tmp_path)
    assert Counter(f.text for f in found) == Counter(f"{live_server.url}/devices/{i}" for i in devices)

    # an unknown serial in the typed list: the form again, the reason beside the list
    tab.go("/labels")
    tab.page.get_by_label("Serial numbers or asset tags, one per line").fill("BR-1\nNOPE-9")
    tab.page.locator("#print-labels").click()
    error = tab.page.locator("#e-serials")
    assert "NOPE-9" in error.inner_text() and "BR-1" not in error.inner_text()
    tab.shot("unknown-serial")

    # the device search's filters carry over to the form
    tab.go("/devices?q=BR-")
    tab.page.locator("#print-search-labels").click()
    tab.page.wait_for_url("**/labels?q=BR-")
    assert "4 devices selected." in tab.page.locator("#label-count").inner_text()
