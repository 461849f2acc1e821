"""The user guide's screenshots: each role signs in, in Chinese and in English, and the pages its guide page
describes are captured. Every run checks those pages render for that role in that language; the pictures go
to var/screenshots/guide/, or, with LABFLEET_GUIDE_IMAGES=1 (`make guide-images`), to docs/images/ where
docs/guide/*.md show them (the Chinese UI for the .zh.md pages, English for the others)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from fleet.domain.enums import Role
from tests.api.test_console_scope_matrix import new_rollout
from tests.api.test_scope_matrix import new_alert
from tests.console.conftest import SHOTS, LiveServer, Tab
from tests.console.helpers import add_user
from tests.console.test_browser_basics import sign_in
from tests.factories import World, build_world

ROOT = Path(__file__).resolve().parents[2]
# The people in the pictures (each test has its own database, so the names repeat across languages).
NAMES = {
    Role.TECHNICIAN: "zhang.wei",
    Role.IT_STAFF: "li.na",
    Role.PROCUREMENT: "chen.jing",
    Role.ADMIN: "admin",
}
DOC_IMAGES = ROOT / "docs" / "images"


def target() -> Path:
    return DOC_IMAGES if os.environ.get("LABFLEET_GUIDE_IMAGES") == "1" else SHOTS / "guide"


# Guide page -> (the role that reads it, [(picture name, path, a text the page must show in en / zh)]).
def guide(w: World) -> dict[str, tuple[Role, list[tuple[str, str, tuple[str, str]]]]]:
    return {
        "technician": (
            Role.TECHNICIAN,
            [
                ("deliveries", "/deliveries", ("Check the file", "检查文件")),
                ("device", f"/devices/{w.device_a}", ("Lifecycle", "生命周期")),
                ("provisioning", f"/provisioning?school={w.school_a}", ("New claim token", "新建认领令牌")),
                ("timetables", f"/admin/timetables?school={w.school_a}", ("Bell periods", "作息课节")),
            ],
        ),
        "it-staff": (
            Role.IT_STAFF,
            [
                ("cockpit", "/", ("School A", "School A")),
                ("alerts", "/alerts", ("Alerts", "告警")),
                (
                    "update-policies",
                    f"/admin/update-policies?school={w.school_a}",
                    ("Maintenance windows", "维护时段"),
                ),
            ],
        ),
        "procurement": (
            Role.PROCUREMENT,
            [
                ("reports", "/reports?name=inventory", ("Reports", "报表")),
                ("device", f"/devices/{w.device_a}", ("Unit cost", "单价")),
            ],
        ),
        "admin": (
            Role.ADMIN,
            [
                ("users", "/admin", ("New API token", "新建 API 令牌")),
                ("audit", "/admin/audit", ("Audit log", "审计日志")),
            ],
        ),
    }


def world(live: LiveServer, locale: str) -> World:
    async def build(api: Any) -> World:
        w = await build_world(api)
        await new_rollout(api, w, True)
        await new_alert(api, w, True)
        for role in (Role.TECHNICIAN, Role.IT_STAFF, Role.PROCUREMENT, Role.ADMIN):
            schools = None if role is Role.ADMIN else (w.school_a,)
            await add_user(api.sessions, api.clock, NAMES[role], role, schools, locale)
        return w

    return live.run(build)


@pytest.mark.parametrize("locale", ["en", "zh_CN"])
def test_the_guide_pages_screenshots(live_server: LiveServer, tab: Tab, locale: str) -> None:
    tab.base = live_server.url
    w = world(live_server, locale)
    out = target()
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".zh" if locale == "zh_CN" else ""
    for page_name, (role, shots) in guide(w).items():
        tab.page.context.clear_cookies()
        sign_in(tab, NAMES[role])
        for name, path, texts in shots:
            response = tab.go(path)
            assert response.status == 200, (role, path)
            tab.page.wait_for_load_state("networkidle")
            text = texts[1] if suffix else texts[0]
            assert text in tab.page.locator("main").inner_text(), (role, path, text)
            if page_name == "admin" and suffix:
                continue  # the guide's index (docs/guide/README.md), which shows these, is in English
            tab.page.screenshot(path=str(out / f"guide-{page_name}-{name}{suffix}.png"), timeout=60_000)
