"""The stocktake pages without a browser: start a count from the room picker, count typed tags as a plain
form and as an htmx fragment, an unknown tag refused beside the field (in Chinese too), settle and finish."""

from __future__ import annotations

import re

from sqlalchemy import select

from fleet.domain.enums import Role
from fleet.persistence.models import AuditEntry, Device
from tests.api.test_stocktake import room_with_devices
from tests.conftest import Api
from tests.console.helpers import add_user, csrf_of, sign_in


def tally(html: str) -> tuple[int, int, int]:
    got = [int(re.search(rf'id="n-{k}">(\d+)<', html).group(1)) for k in ("found", "missing", "unexpected")]  # type: ignore[union-attr]
    return got[0], got[1], got[2]


async def test_a_technician_counts_a_room_from_the_picker_to_the_audit_log(api: Api) -> None:
    w, ids = await room_with_devices(api)
    await add_user(api.sessions, api.clock, "tech", Role.TECHNICIAN, (w.school_a,))
    assert (await sign_in(api.client, "tech")).status_code == 303
    picker = await api.client.get("/stocktake")
    assert (
        picker.status_code == 200 and f'<option value="{w.room_a}">School A · Room 1</option>' in picker.text
    )
    csrf = csrf_of(picker.text)
    r = await api.client.post("/stocktake", data={"csrf": csrf, "room": "", "window": "today"})
    assert r.status_code == 422 and 'id="room-error"' in r.text
    r = await api.client.post("/stocktake", data={"csrf": csrf, "room": str(w.room_a), "window": "today"})
    assert r.status_code == 303
    url = r.headers["location"]
    page = await api.client.get(url)
    assert page.status_code == 200 and tally(page.text) == (2, 3, 0)
    assert "/static/vendor/jsqr/jsQR.js" in page.text and 'id="scanner"' in page.text

    # A plain form (no script): answered with the page, the count moved on.
    r = await api.client.post(f"{url}/scan", data={"csrf": csrf, "code": "AT-silent"})
    assert r.status_code == 200 and tally(r.text) == (3, 2, 0) and "AT-silent: found here." in r.text
    # htmx: only the count's fragment comes back.
    hx = {"HX-Request": "true"}
    r = await api.client.post(f"{url}/scan", data={"csrf": csrf, "code": "AT-wanderer"}, headers=hx)
    assert r.status_code == 200 and r.text.lstrip().startswith("{% from") is False
    assert "<html" not in r.text and tally(r.text) == (3, 2, 1) and "Belongs to Lab 2" in r.text
    r = await api.client.post(f"{url}/scan", data={"csrf": csrf, "code": "AT-nowhere"}, headers=hx)
    assert r.status_code == 200 and 'id="code-error"' in r.text and 'value="AT-nowhere"' in r.text
    # Moving needs a reason; then it is done through the device's lifecycle.
    move = f"{url}/devices/{ids['wanderer']}/move-here"
    r = await api.client.post(move, data={"csrf": csrf, "reason": ""}, headers=hx)
    assert f'id="e-reason-{ids["wanderer"]}"' in r.text
    r = await api.client.post(move, data={"csrf": csrf, "reason": "on the shelf"}, headers=hx)
    assert "Moved to this room." in r.text
    r = await api.client.post(f"{url}/finish", data={"csrf": csrf})
    assert r.status_code == 303
    done = await api.client.get(r.headers["location"])
    assert 'id="finished"' in done.text and 'id="scan-form"' not in done.text
    async with api.sessions() as s:
        assert (await s.get(Device, ids["wanderer"])).room_id == w.room_a  # type: ignore[union-attr]
        finish = (
            await s.execute(select(AuditEntry).where(AuditEntry.action == "stocktake.finish"))
        ).scalar_one()
    assert finish.actor.endswith(":tech") and finish.after["moved"] == 1  # type: ignore[index]


async def test_an_unknown_tag_is_refused_beside_the_field_in_chinese(api: Api) -> None:
    w, _ids = await room_with_devices(api)
    await add_user(api.sessions, api.clock, "tech-zh", Role.TECHNICIAN, (w.school_a,), "zh_CN")
    await sign_in(api.client, "tech-zh")
    csrf = csrf_of((await api.client.get("/stocktake")).text)
    r = await api.client.post("/stocktake", data={"csrf": csrf, "room": str(w.room_a), "window": "none"})
    url = r.headers["location"]
    r = await api.client.post(f"{url}/scan", data={"csrf": csrf, "code": "AT-b-1"})
    assert r.status_code == 422
    assert re.search(r'id="code-error">[^<]*设备', r.text), r.text[-2000:]
    assert "缺失" in r.text and "盘点" in r.text
