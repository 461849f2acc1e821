"""A rollout created in a real browser, in English and in Chinese: the form, the preview of the devices per
group (an htmx swap, no reload), a refusal shown beside its field, then the rollout's own page."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select, update

from fleet.domain.enums import Role
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import Device
from fleet.persistence.models_mqtt import DeviceState
from fleet.persistence.models_rollouts import Rollout
from tests.console.conftest import LiveServer, Tab
from tests.console.helpers import add_user
from tests.console.test_browser_pages import sign_in
from tests.factories import World, build_world, post

V1 = "/api/v1"


def district(live: LiveServer, username: str, locale: str | None) -> World:
    """Two schools with 3 and 2 in-service terminals on 1.1.0, the profiles' images imported, an IT user."""

    async def build(api: Any) -> World:
        w = await build_world(api)
        r = await api.client.post(
            f"{V1}/artifacts/import", json={"source": "profiles"}, headers=await api.admin()
        )
        assert r.status_code == 201, r.text
        ids = [w.device_a, w.device_b]
        for school, room, count in ((w.school_a, w.room_a, 2), (w.school_b, w.room_b, 1)):
            for i in range(count):
                d = await post(
                    api,
                    f"{V1}/devices",
                    {
                        "serial_number": f"SN-{school}-{i}",
                        "asset_tag": f"AT-{school}-{i}",
                        "model_id": w.model,
                        "school_id": school,
                        "room_id": room,
                    },
                )
                ids.append(d["id"])
        async with unit_of_work(api.sessions) as s:
            await s.execute(update(Device).where(Device.id.in_(ids)).values(status="in_service"))
            for i in ids:
                s.add(DeviceState(device_id=i, firmware_version="1.1.0"))
        await add_user(api.sessions, api.clock, username, Role.IT_STAFF, None, locale=locale)
        return w

    return live.run(build)


def rollouts(live: LiveServer) -> list[tuple[str, str]]:
    async def read(api: Any) -> list[tuple[str, str]]:
        async with api.sessions() as s:
            return [
                (r.name, r.state) for r in (await s.execute(select(Rollout).order_by(Rollout.id))).scalars()
            ]

    return live.run(read)


def fill(tab: Tab, labels: dict[str, str], name: str) -> None:
    p = tab.page
    p.get_by_label(labels["name"], exact=True).fill(name)
    p.get_by_label(labels["model"], exact=True).select_option(label="EduTech LT-100 · " + labels["terminal"])
    p.get_by_label(labels["version"], exact=True).select_option("1.2.0")
    p.get_by_label(labels["canary"], exact=True).fill("2")


def preview_rows(tab: Tab) -> list[list[str]]:
    rows = tab.page.locator("#preview-groups tbody tr")
    return [[c.strip() for c in rows.nth(i).locator("td").all_inner_texts()[:2]] for i in range(rows.count())]


def test_a_rollout_is_created_with_a_preview_of_its_groups_in_english(
    live_server: LiveServer, tab: Tab
) -> None:
    tab.base = live_server.url
    district(live_server, "it", None)
    sign_in(tab, "it")
    tab.go("/rollouts")
    tab.page.get_by_role("link", name="New rollout").click()
    tab.page.wait_for_url(re.compile(r"/rollouts/new$"))
    labels = {
        "name": "Name",
        "model": "Model",
        "terminal": "Learning terminal",
        "version": "Target version",
        "canary": "Canary devices",
    }
    fill(tab, labels, "LT-100 to 1.2.0")
    tab.page.get_by_label("Bandwidth cap per school (Mbit/s)").fill("20")
    tab.shot("form")
    tab.page.evaluate("() => { window.__notReloaded = true; }")
    tab.page.get_by_role("button", name="Preview the groups").click()
    tab.page.wait_for_selector("#preview-groups")
    assert tab.page.evaluate("() => window.__notReloaded") is True  # swapped in by htmx
    assert preview_rows(tab) == [["Canary", "2"], ["School A", "2"], ["School B", "1"]]
    assert "5 devices in 3 groups" in tab.page.locator("#preview-total").inner_text()
    tab.shot("preview")
    assert rollouts(live_server) == []  # a preview writes nothing
    tab.page.get_by_role("button", name="Create rollout").click()
    tab.page.wait_for_url(re.compile(r"/rollouts/\d+$"))
    assert "Running" in tab.page.locator("#rollout-state").inner_text()
    assert "20.0 Mbit/s" in tab.page.locator("main").inner_text()
    assert tab.page.locator("#rollout-devices tbody tr").count() == 5
    tab.shot("created")
    tab.page.locator("#rollout-devices tbody a").first.click()
    tab.page.wait_for_selector("#device-timeline")
    assert "Pending" in tab.page.locator("#device-timeline").inner_text()
    tab.shot("device-timeline")
    assert rollouts(live_server) == [("LT-100 to 1.2.0", "running")]


def test_a_rollout_is_created_in_chinese_and_a_bad_field_says_why_beside_it(
    live_server: LiveServer, tab: Tab
) -> None:
    tab.base = live_server.url
    district(live_server, "it-zh", "zh_CN")
    sign_in(tab, "it-zh")
    tab.go("/rollouts/new")
    labels = {
        "name": "名称",
        "model": "型号",
        "terminal": "学习终端",
        "version": "目标版本",
        "canary": "金丝雀设备数",
    }
    fill(tab, labels, "LT-100 升级到 1.2.0")
    tab.page.get_by_label("百分比步骤").fill("50, 25")
    tab.page.get_by_role("button", name="预览分组").click()
    error = tab.page.locator("#e-percents")
    error.wait_for()
    assert "逐步增大" in error.inner_text()
    assert tab.page.get_by_label("百分比步骤").get_attribute("aria-invalid") == "true"
    tab.shot("bad-field")
    main = tab.page.locator("main").inner_text()
    for english in ("Preview the groups", "Target version", "Canary", "threshold", "share", "Schools"):
        assert english not in main
    tab.page.get_by_label("百分比步骤").fill("50, 100")
    tab.page.get_by_role("button", name="预览分组").click()
    tab.page.wait_for_selector("#preview-groups")
    assert preview_rows(tab)[0] == ["金丝雀组", "2"]
    assert "5 台设备" in tab.page.locator("#preview-total").inner_text()
    tab.shot("preview-zh")
    tab.page.get_by_role("button", name="创建升级任务").click()
    tab.page.wait_for_url(re.compile(r"/rollouts/\d+$"))
    assert "进行中" in tab.page.locator("#rollout-state").inner_text()
    tab.shot("created-zh")
    assert rollouts(live_server) == [("LT-100 升级到 1.2.0", "running")]
