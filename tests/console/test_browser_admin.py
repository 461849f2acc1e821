"""Administration in a real browser, in English and Chinese: users and API tokens, the timetable editor (bell
periods and calendar) with its refusals beside the field, and a school's update policy."""

from __future__ import annotations

import re

from fleet.domain.enums import Role
from tests.console.conftest import LiveServer, Tab
from tests.console.helpers import add_user
from tests.console.test_browser_pages import sign_in, world_with_user
from tests.factories import World, build_world


def test_an_admin_creates_a_user_and_an_api_token_then_disables_the_user(
    live_server: LiveServer, tab: Tab
) -> None:
    tab.base = live_server.url
    world_with_user(live_server, "root", Role.ADMIN, school=None)
    sign_in(tab, "root")
    tab.page.get_by_role("link", name="Administration").click()
    tab.page.wait_for_url(re.compile(r"/admin$"))
    new_user = tab.page.locator("form[action='/admin/users']")
    new_user.get_by_label("Username").fill("tech-b")
    new_user.get_by_label("Password").fill("short")
    new_user.get_by_label("Role").select_option(label="Lab technician")
    new_user.get_by_role("button", name="Create").click()
    tab.page.wait_for_load_state()
    assert tab.page.locator("#e-password").inner_text() == "At least 10 characters."
    new_user = tab.page.locator("form[action='/admin/users']")
    new_user.get_by_label("Password").fill("a long enough password")
    new_user.get_by_role("button", name="Create").click()
    tab.page.wait_for_url(re.compile(r"/admin$"))
    row = tab.page.locator("tr", has_text="tech-b")
    assert "Lab technician" in row.inner_text()
    token = tab.page.locator("form[action='/admin/tokens']")
    token.get_by_label("Name").fill("grafana")
    token.get_by_label("Role").select_option(label="Auditor")
    token.get_by_role("button", name="Create").click()
    tab.page.wait_for_load_state()
    assert len(tab.page.locator("#api-token").inner_text()) > 20
    tab.shot("token-created")
    tab.page.locator("tr", has_text="tech-b").get_by_role(
        "button", name="Disable"
    ).click()  # confirm accepted
    tab.page.wait_for_url(re.compile(r"/admin$"))
    assert tab.page.locator("tr", has_text="tech-b").get_by_role("button", name="Enable").is_visible()
    tab.page.get_by_role("link", name="Audit log").click()
    tab.page.get_by_label("Action").fill("user.disable")
    tab.page.get_by_role("button", name="Filter").click()
    tab.page.wait_for_url(re.compile(r"action=user.disable"))
    rows = tab.page.locator("tbody tr")
    assert rows.count() == 1 and "user:" in rows.first.inner_text() and "root" in rows.first.inner_text()
    tab.shot("audit-filtered")


def _it_staff_world(live: LiveServer, name: str, locale: str | None = None) -> World:
    async def build(api: object) -> World:
        w = await build_world(api)  # type: ignore[arg-type]
        await add_user(api.sessions, api.clock, name, Role.IT_STAFF, (w.school_a,), locale)  # type: ignore[attr-defined]
        return w

    return live.run(build)


def test_bell_periods_are_edited_and_an_overlap_is_refused_beside_the_field(
    live_server: LiveServer, tab: Tab
) -> None:
    tab.base = live_server.url
    _it_staff_world(live_server, "it-a")
    sign_in(tab, "it-a")
    tab.page.get_by_role("link", name="Administration").click()
    tab.page.wait_for_url(re.compile(r"/admin/timetables"))
    new = tab.page.locator("form[action$='/periods']")
    new.get_by_label("Weekday").select_option(label="Monday")
    new.get_by_label("Period").fill("P2")
    new.get_by_label("Starts").fill("08:30")
    new.get_by_label("Ends").fill("09:10")
    new.get_by_role("button", name="Add").click()
    tab.page.wait_for_load_state()
    error = tab.page.locator("#pn-start_time-error")
    assert error.inner_text() == "Overlaps period P1 (08:00-08:40) on the same day."
    assert tab.page.locator("#pn-start_time").get_attribute("aria-describedby") == "pn-start_time-error"
    tab.shot("period-overlap")
    new = tab.page.locator("form[action$='/periods']")
    new.get_by_label("Starts").fill("08:50")
    new.get_by_role("button", name="Add").click()
    tab.page.wait_for_url(re.compile(r"done=period"))
    row = tab.page.locator("#periods-table tr", has_text="P2")
    assert "08:50" in row.inner_text() and "09:10" in row.inner_text()
    row.get_by_role("link", name="Edit period P2 on Monday").click()
    edit = tab.page.locator("#edit form")
    edit.get_by_label("Ends").fill("09:30")
    edit.get_by_role("button", name="Save").click()
    tab.page.wait_for_url(re.compile(r"done=period"))
    assert "09:30" in tab.page.locator("#periods-table tr", has_text="P2").inner_text()
    tab.shot("periods")
    tab.page.get_by_role("button", name="Delete period P2 on Monday").click()
    tab.page.wait_for_url(re.compile(r"done=deleted"))
    assert tab.page.locator("#periods-table tr", has_text="P2").count() == 0
    # The school's update policy, on the next tab of the same page.
    tab.page.get_by_role("link", name="Update policies").click()
    tab.page.get_by_label("Weekday").first.select_option(label="Saturday")
    tab.page.locator("#w0-w0-start").fill("09:00")
    tab.page.locator("#w0-w0-end").fill("17:00")
    tab.page.get_by_label("Devices downloading at once").fill("20")
    tab.page.get_by_role("button", name="Save policy").click()
    tab.page.wait_for_url(re.compile(r"done=saved"))
    assert tab.page.locator("#w0-w0-start").input_value() == "09:00"
    assert tab.page.get_by_label("Devices downloading at once").input_value() == "20"
    tab.shot("update-policy")


def test_the_calendar_editor_speaks_chinese(live_server: LiveServer, tab: Tab) -> None:
    tab.base = live_server.url
    _it_staff_world(live_server, "it-zh", locale="zh_CN")
    sign_in(tab, "it-zh")
    tab.go("/admin/timetables")
    assert "作息课节" in tab.page.locator("main").inner_text()
    new = tab.page.locator("form[action$='/calendar']")
    new.get_by_label("类型").select_option(label="假期")
    new.get_by_label("名称").fill("国庆节")
    new.get_by_label("起始日期").fill("2026-10-07")
    new.get_by_label("结束日期（含）").fill("2026-10-01")
    new.get_by_role("button", name="添加").click()
    tab.page.wait_for_load_state()
    assert tab.page.locator("#cn-end_date-error").inner_text() == "必须晚于开始时间。"
    tab.shot("calendar-refused-zh")
    new = tab.page.locator("form[action$='/calendar']")
    new.get_by_label("结束日期（含）").fill("2026-10-08")
    new.get_by_role("button", name="添加").click()
    tab.page.wait_for_url(re.compile(r"done=calendar"))
    row = tab.page.locator("#calendar-table tr", has_text="国庆节")
    assert "假期" in row.inner_text() and "2026年10月7日" in row.inner_text()
    main = tab.page.locator("main").inner_text()
    for english in ("Bell periods", "Calendar", "Holiday", "Delete", "Edit"):
        assert english not in main, english
    tab.shot("calendar-zh")
