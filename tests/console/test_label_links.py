"""The ways into "Print labels" in the console, in process: a finished import links to its own delivery, a
room and a school link to theirs, and the form counts what each selects; in Chinese, the form and its refusals
read in Chinese."""

from __future__ import annotations

import re
from urllib.parse import unquote

from fleet.domain.enums import Role
from tests.conftest import Api
from tests.console.helpers import add_user, csrf_of, sign_in
from tests.csvgen import delivery_csv
from tests.factories import build_world


async def test_a_finished_import_links_to_the_labels_of_that_delivery(api: Api) -> None:
    w = await build_world(api)
    await add_user(api.sessions, api.clock, "tech-l", Role.TECHNICIAN, (w.school_a,))
    assert (await sign_in(api.client, "tech-l")).status_code == 303
    csrf = csrf_of((await api.client.get("/deliveries")).text)
    files = {"file": ("d.csv", delivery_csv(6, prefix="LNK"), "text/csv")}
    preview = await api.client.post("/deliveries/preview", data={"csrf": csrf}, files=files)
    content = re.search(r'name="content" value="([^"]+)"', preview.text).group(1)  # type: ignore[union-attr]
    done = await api.client.post(
        "/deliveries/commit", data={"csrf": csrf, "content": content, "filename": "d.csv"}
    )
    assert done.status_code == 200, done.text[:300]
    link = re.search(r'id="print-delivery-labels" href="([^"]+)"', done.text)
    assert link, "no Print labels link after the import"
    form = await api.client.get(unquote(link.group(1)))
    assert form.status_code == 200
    assert re.search(r'id="label-count">6 devices selected', form.text)

    room = await api.client.get(f"/cockpit/rooms/{w.room_a}")
    href = re.search(r'id="print-room-labels" href="([^"]+)"', room.text).group(1)  # type: ignore[union-attr]
    form = await api.client.get(href)
    assert re.search(r'id="label-count">7 devices selected', form.text)  # the world's device + the delivery
    school = await api.client.get(f"/cockpit/schools/{w.school_a}")
    assert f'href="/labels?school={w.school_a}"' in school.text


async def test_the_form_and_its_refusal_read_in_chinese(api: Api) -> None:
    w = await build_world(api)
    await add_user(api.sessions, api.clock, "tech-zh", Role.TECHNICIAN, (w.school_a,), "zh_CN")
    assert (await sign_in(api.client, "tech-zh")).status_code == 303
    form = await api.client.get(f"/labels?room={w.room_a}")
    assert "打印标签" in form.text and "已选 1 台设备" in form.text and "A4 标签纸" in form.text
    r = await api.client.post(
        "/labels", data={"csrf": csrf_of(form.text), "serials": "NOPE-1", "layout": "3x8", "content": "tag"}
    )
    assert r.status_code == 422
    assert "没有以下序列号或资产编号的设备：NOPE-1" in r.text and 'id="e-serials"' in r.text
    unknown = await api.client.get("/labels?room=999999")
    assert unknown.status_code == 404 and "error-code" in unknown.text  # the console's 404 page
