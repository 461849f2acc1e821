"""The stocktake page in a real Chromium at phone size (360 px): typed tags counted live, a QR label filmed
by Chromium's fake camera (a .y4m made here from the label's QR code) read by the vendored jsQR, and a photo
of a label (PNG) read by the same decode function; then a difference settled and the count finished."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.domain.enums import Role
from tests.api.test_stocktake import room_with_devices
from tests.conftest import need_external
from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS, LiveServer, Tab, _block_external
from tests.console.helpers import add_user
from tests.console.test_browser_pages import sign_in

# What the filmed label carries: an asset tag (labels carry the tag or the device's console URL).
FILMED = "AT-silent"
# The fake camera's frame: a phone camera's 640x480, the label filling the middle.
W, H = 640, 480


def qr_pixels(text: str, scale: int = 8) -> list[bytearray]:
    """The QR code of `text` as rows of grey pixels (0 black, 255 white), with its quiet zone."""
    import segno

    return [
        bytearray(0 if dark else 255 for dark in row)
        for row in segno.make_qr(text, error="m").matrix_iter(scale=scale, border=4)
    ]


def write_y4m(path: Path, text: str, frames: int = 10) -> None:
    """A YUV 4:2:0 video of the QR code on a white page, the format Chromium's fake capture device reads."""
    qr = qr_pixels(text)
    top, left = (H - len(qr)) // 2, (W - len(qr[0])) // 2
    luma = bytearray(b"\xff" * (W * H))
    for y, row in enumerate(qr):
        luma[(top + y) * W + left : (top + y) * W + left + len(row)] = row
    chroma = b"\x80" * (W // 2 * (H // 2))
    with path.open("wb") as fh:
        fh.write(f"YUV4MPEG2 W{W} H{H} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            fh.write(b"FRAME\n" + bytes(luma) + chroma + chroma)


@pytest.fixture(scope="module")
def camera_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        need_external("Chromium at /usr/bin/chromium (Debian package chromium)")
    pytest.importorskip("segno")
    from playwright.sync_api import sync_playwright

    video = tmp_path_factory.mktemp("camera") / "label.y4m"
    write_y4m(video, FILMED)
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ]
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def phone(camera_browser: Any, request: pytest.FixtureRequest) -> Iterator[Tab]:
    context = camera_browser.new_context(
        viewport={"width": 360, "height": 740}, locale="en-US", is_mobile=True, has_touch=True
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    t = Tab(page=page, name=request.node.name.removeprefix("test_")[:60])
    context.route("**/*", _block_external(t.blocked))
    page.on("dialog", lambda d: d.accept())
    try:
        yield t
    finally:
        context.close()
    assert not t.blocked, f"the page tried to reach outside loopback: {t.blocked}"


def n(tab: Tab, key: str) -> int:
    return int(tab.page.locator(f"#n-{key}").inner_text())


def test_a_room_counted_on_a_phone_by_typed_tag_camera_and_photo(
    live_server: LiveServer, phone: Tab, tmp_path: Path
) -> None:
    tab = phone
    tab.base = live_server.url

    async def world(api: Any) -> tuple[Any, dict[str, int]]:
        w, ids = await room_with_devices(api)
        await add_user(api.sessions, api.clock, "tech-a", Role.TECHNICIAN, (w.school_a,))
        return w, ids

    w, ids = live_server.run(world)
    sign_in(tab, "tech-a")
    tab.go("/stocktake")
    tab.page.get_by_label("Room", exact=True).select_option(str(w.room_a))
    tab.page.get_by_label("No network pre-marks").check()
    tab.shot("pick-a-room")
    tab.page.get_by_role("button", name="Start counting").click()
    tab.page.wait_for_url("**/stocktake/*")
    assert (n(tab, "found"), n(tab, "missing"), n(tab, "unexpected")) == (0, 5, 0)
    # Phone size: nothing wider than the screen, touch targets at least 44 px high.
    assert tab.page.evaluate("document.documentElement.scrollWidth") <= 360
    for name in ("Count it", "Scan with the camera", "Finish the count"):
        box = tab.page.get_by_role("button", name=name).bounding_box()
        assert box is not None and box["height"] >= 44, (name, box)
    url = tab.page.url

    # 1. A typed tag: counted in place (htmx), no page load.
    tab.page.evaluate("window.__same_page = true")
    tab.page.get_by_label("Asset tag, serial number or label").fill("AT-yesterday")
    tab.page.get_by_role("button", name="Count it").click()
    tab.page.wait_for_selector("#scan-message:has-text('AT-yesterday: found here.')")
    assert (n(tab, "found"), n(tab, "missing")) == (1, 4)
    assert tab.page.evaluate("window.__same_page") is True
    # A tag nobody knows: the reason beside the field.
    tab.page.get_by_label("Asset tag, serial number or label").fill("AT-nowhere")
    tab.page.get_by_role("button", name="Count it").click()
    tab.page.wait_for_selector("#code-error")
    tab.shot("typed")

    # 2. The camera films a label: jsQR reads it and the count moves on by itself.
    tab.page.get_by_role("button", name="Scan with the camera").click()
    tab.page.wait_for_selector(f"#scan-message:has-text('{FILMED}: found here.')", timeout=45_000)
    assert (n(tab, "found"), n(tab, "missing")) == (2, 3)
    tab.shot("camera")
    tab.page.get_by_role("button", name="Stop the camera").click()

    # 3. A photo of a label carrying the console URL of a device of another room: read by the same decode
    # function, counted as belonging elsewhere.
    import segno

    photo = tmp_path / "label.png"
    segno.make_qr(f"{live_server.url}/devices/{ids['wanderer']}", error="m").save(
        str(photo), scale=6, border=4
    )
    tab.page.locator("#scan-photo").set_input_files(str(photo))
    tab.page.wait_for_selector("#scan-message:has-text('AT-wanderer belongs to another room.')")
    assert n(tab, "unexpected") == 1
    assert "Belongs to Lab 2" in tab.page.locator("#lines-unexpected").inner_text()

    # 4. Settle: move it here with a reason; finish.
    line = tab.page.locator("#lines-unexpected .line", has_text="AT-wanderer")
    line.get_by_label("Reason").fill("found on the shelf")
    line.get_by_role("button", name="Move here").click()
    tab.page.wait_for_selector("#scan-message:has-text('Moved to this room.')")
    tab.shot("settled")
    tab.page.get_by_role("button", name="Finish the count").click()
    tab.page.wait_for_selector("#finished")
    assert tab.page.url.startswith(url)
    tab.shot("finished")
    # The same page in Chinese: the counters and the finish note are translated.
    tab.page.get_by_role("button", name="中文").click()
    tab.page.wait_for_selector("#scan-message:has-text('盘点已完成')")
    assert "已清点到" in tab.page.locator("#tally").inner_text()
    tab.shot("finished-zh")

    async def audit(api: Any) -> dict[str, Any]:
        from sqlalchemy import select

        from fleet.persistence.models import AuditEntry

        async with api.sessions() as s:
            entry = (
                await s.execute(select(AuditEntry).where(AuditEntry.action == "stocktake.finish"))
            ).scalar_one()
            return dict(entry.after)

    after = live_server.run(audit)
    assert {k: after[k] for k in ("found", "missing", "unexpected", "moved")} == {
        "found": 2,
        "missing": 3,
        "unexpected": 1,
        "moved": 1,
    }
