"""Administration in the console, in process: the timetable editor (bell periods, calendar, time zone), school
update policies and API tokens, each through the same service as the API, refused beside the field in the
user's language, and written to the audit log under the user's name."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select

from fleet.domain.enums import Role
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import ApiToken, AuditEntry, BellPeriod, CalendarDay, School
from fleet.persistence.models_rollouts import SchoolUpdatePolicy
from tests.conftest import Api
from tests.console.helpers import add_user, csrf_of, sign_in
from tests.factories import World, build_world

PERIODS = "/admin/timetables"


async def signed_in(api: Api, role: Role = Role.TECHNICIAN, locale: str | None = None) -> tuple[World, str]:
    w = await build_world(api)
    name = f"u-{role}"
    await add_user(api.sessions, api.clock, name, role, None if role is Role.ADMIN else (w.school_a,), locale)
    r = await sign_in(api.client, name)
    assert r.status_code == 303
    page = await api.client.get(f"{PERIODS}?school={w.school_a}")
    return w, csrf_of(page.text)


def field_error(html: str, field_id: str) -> str:
    m = re.search(rf'<p class="field-error" id="{re.escape(field_id)}-error">([^<]*)</p>', html)
    assert m, f"no message beside {field_id}"
    return m.group(1)


async def periods(api: Api, school_id: int) -> list[tuple[int, str, str, str]]:
    async with unit_of_work(api.sessions) as s:
        rows = (await s.execute(select(BellPeriod).where(BellPeriod.school_id == school_id))).scalars()
        return sorted((p.weekday, p.name, f"{p.start_time:%H:%M}", f"{p.end_time:%H:%M}") for p in rows)


async def actors(api: Api, action: str) -> list[str]:
    """The console users (`user:<id>:<name>`) the audit names for an action (the setup is by token)."""
    async with unit_of_work(api.sessions) as s:
        found = (await s.execute(select(AuditEntry.actor).where(AuditEntry.action == action))).scalars()
        return [a.split(":", 2)[2] for a in found if a.startswith("user:")]


async def post(client: httpx.AsyncClient, path: str, csrf: str, **data: str) -> httpx.Response:
    return await client.post(path, data={"csrf": csrf, **data})


async def test_a_technician_adds_edits_and_deletes_a_bell_period(api: Api) -> None:
    w, csrf = await signed_in(api)
    before = await periods(api, w.school_a)
    r = await post(
        api.client, f"{PERIODS}/{w.school_a}/periods", csrf, weekday="0", name="P2", start_time="08:50",
        end_time="09:30",
    )  # fmt: skip
    assert r.status_code == 303 and r.headers["location"].startswith(f"{PERIODS}?school={w.school_a}")
    assert await periods(api, w.school_a) == sorted([*before, (0, "P2", "08:50", "09:30")])
    page = await api.client.get(r.headers["location"])
    assert "Saved." in page.text and "08:50" in page.text
    async with unit_of_work(api.sessions) as s:
        pid = (await s.execute(select(BellPeriod.id).where(BellPeriod.name == "P2"))).scalar_one()
    edit = await api.client.get(f"{PERIODS}?school={w.school_a}&edit=period-{pid}")
    assert f'action="/admin/timetables/periods/{pid}"' in edit.text and 'value="08:50"' in edit.text
    r = await post(
        api.client, f"{PERIODS}/periods/{pid}", csrf, weekday="0", name="P2", start_time="08:50",
        end_time="09:35",
    )  # fmt: skip
    assert r.status_code == 303
    assert (0, "P2", "08:50", "09:35") in await periods(api, w.school_a)
    r = await post(api.client, f"{PERIODS}/periods/{pid}/delete", csrf)
    assert r.status_code == 303
    assert await periods(api, w.school_a) == before
    # Every change is in the audit log under the user's name, as the API's would be under the token's.
    for action in ("bell_period.create", "bell_period.update", "bell_period.delete"):
        assert await actors(api, action) == ["u-technician"], action


async def test_overlapping_periods_are_refused_beside_the_field_in_the_users_language(api_any: Api) -> None:
    api = api_any
    w, csrf = await signed_in(api, locale="zh_CN")
    before = await periods(api, w.school_a)  # P1, Monday 08:00-08:40
    r = await post(
        api.client, f"{PERIODS}/{w.school_a}/periods", csrf, weekday="0", name="P1b", start_time="08:30",
        end_time="09:10",
    )  # fmt: skip
    assert r.status_code == 422
    assert field_error(r.text, "pn-start_time") == "与同一天的课节 P1（08:00-08:40）时间重叠。"
    assert 'value="P1b"' in r.text  # the form keeps what was typed
    r = await post(
        api.client, f"{PERIODS}/{w.school_a}/periods", csrf, weekday="0", name="P2", start_time="09:00",
        end_time="08:50",
    )  # fmt: skip
    assert r.status_code == 422 and field_error(r.text, "pn-end_time") == "必须晚于开始时间。"
    r = await post(
        api.client, f"{PERIODS}/{w.school_a}/periods", csrf, weekday="0", name="P2", start_time="9 am",
        end_time="09:40+08:00",
    )  # fmt: skip
    assert r.status_code == 422
    assert "HH:MM" in field_error(r.text, "pn-start_time") and "HH:MM" in field_error(r.text, "pn-end_time")
    assert await periods(api, w.school_a) == before  # nothing was written
    # A period that only touches another (ends as it starts) is fine, and so is the same time on another day.
    for weekday, start, end in (("0", "08:40", "09:20"), ("1", "08:00", "08:40")):
        r = await post(
            api.client, f"{PERIODS}/{w.school_a}/periods", csrf, weekday=weekday, name="P2", start_time=start,
            end_time=end,
        )  # fmt: skip
        assert r.status_code == 303, r.text[:500]


async def test_the_api_refuses_an_overlapping_period_too(api: Api) -> None:
    w = await build_world(api)
    body = {"school_id": w.school_a, "weekday": 0, "name": "X", "start_time": "08:20", "end_time": "08:30"}
    r = await api.client.post("/api/v1/bell-periods", json=body, headers=await api.admin())
    assert r.status_code == 422
    detail = r.json()["details"][0]
    assert detail["field"] == "start_time" and detail["code"] == "overlap" and detail["period"] == "P1"
    # Editing a period so that it overlaps is refused; moving it onto its own old slot is not an overlap.
    r = await api.client.patch(
        f"/api/v1/bell-periods/{w.period_a}", json={"end_time": "08:45"}, headers=await api.admin()
    )
    assert r.status_code == 200


async def test_calendar_entries_are_added_checked_and_deleted(api: Api) -> None:
    w, csrf = await signed_in(api, Role.IT_STAFF)
    r = await post(
        api.client, f"{PERIODS}/{w.school_a}/calendar", csrf, kind="holiday", name="National Day",
        start_date="2026-10-07", end_date="2026-10-01",
    )  # fmt: skip
    assert r.status_code == 422 and field_error(r.text, "cn-end_date") == "Must be after the start."
    r = await post(
        api.client, f"{PERIODS}/{w.school_a}/calendar", csrf, kind="vacation", name="",
        start_date="2026-13-01", end_date="",
    )  # fmt: skip
    assert r.status_code == 422
    assert field_error(r.text, "cn-kind") == "Choose a kind."
    assert field_error(r.text, "cn-start_date") == "Enter a date as YYYY-MM-DD."
    r = await post(
        api.client, f"{PERIODS}/{w.school_a}/calendar", csrf, kind="holiday", name="National Day",
        start_date="2026-10-01", end_date="2026-10-07",
    )  # fmt: skip
    assert r.status_code == 303
    page = await api.client.get(r.headers["location"])
    assert "National Day" in page.text and "Holiday" in page.text
    async with unit_of_work(api.sessions) as s:
        entry = (await s.execute(select(CalendarDay).where(CalendarDay.name == "National Day"))).scalar_one()
    r = await post(api.client, f"{PERIODS}/calendar/{entry.id}/delete", csrf)
    assert r.status_code == 303
    assert await actors(api, "calendar_entry.delete") == ["u-it_staff"]


async def test_an_unknown_time_zone_is_refused_beside_the_field(api: Api) -> None:
    w, csrf = await signed_in(api, Role.ADMIN, locale="zh_CN")
    r = await post(api.client, f"{PERIODS}/{w.school_a}/timezone", csrf, timezone="Asia/Beijing")
    assert r.status_code == 422 and "Asia/Shanghai" in field_error(r.text, "tz-timezone")
    assert "时区" in field_error(r.text, "tz-timezone")
    r = await post(api.client, f"{PERIODS}/{w.school_a}/timezone", csrf, timezone="Asia/Urumqi")
    assert r.status_code == 303
    async with unit_of_work(api.sessions) as s:
        assert (await s.get(School, w.school_a)).timezone == "Asia/Urumqi"  # type: ignore[union-attr]


async def test_the_timetable_is_read_only_for_a_role_that_may_not_change_it(api: Api) -> None:
    w, csrf = await signed_in(api, Role.PROCUREMENT)
    page = await api.client.get(f"{PERIODS}?school={w.school_a}")
    assert page.status_code == 200 and "08:00" in page.text
    assert "/periods/" not in page.text and f"/{w.school_a}/periods" not in page.text  # no forms
    r = await post(api.client, f"{PERIODS}/{w.school_a}/periods", csrf, weekday="x")
    assert r.status_code == 403 and "error-code" in r.text


async def test_a_school_update_policy_is_saved_and_its_bad_rows_are_refused(api: Api) -> None:
    w, csrf = await signed_in(api, Role.IT_STAFF)
    path = f"/admin/update-policies/{w.school_a}"
    r = await post(
        api.client, path, csrf, **{"w0-weekday": "5", "w0-start": "09:00", "w0-end": "08:00",
        "w1-weekday": "", "w1-start": "10:00", "w1-end": "", "uplink_percent": "150"},
    )  # fmt: skip
    assert r.status_code == 422
    assert field_error(r.text, "w0-w0-end") == "Must be after the start."
    assert field_error(r.text, "w1-w1-weekday") == "Choose a day."
    assert "from 1 to 100" in field_error(r.text, "p-uplink_percent")
    async with unit_of_work(api.sessions) as s:
        assert await s.get(SchoolUpdatePolicy, w.school_a) is None
    r = await post(
        api.client, path, csrf, **{"w0-weekday": "5", "w0-start": "09:00", "w0-end": "17:00",
        "w2-weekday": "6", "w2-start": "09:00", "w2-end": "12:00", "max_concurrent_downloads": "25",
        "uplink_percent": "40", "max_mbps": "200"},
    )  # fmt: skip
    assert r.status_code == 303
    async with unit_of_work(api.sessions) as s:
        p = await s.get(SchoolUpdatePolicy, w.school_a)
        assert p is not None
        assert p.windows == [
            {"weekday": 5, "start": "09:00", "end": "17:00"},
            {"weekday": 6, "start": "09:00", "end": "12:00"},
        ]
        assert (p.max_concurrent_downloads, p.uplink_share, p.max_bytes_per_second) == (25, 0.4, 25_000_000)
    page = await api.client.get(r.headers["location"])
    assert 'value="40"' in page.text and 'value="200"' in page.text and "Saved." in page.text
    assert await actors(api, "school.update_policy") == ["u-it_staff"]
    # The API reads back what the console wrote.
    body = (
        await api.client.get(f"/api/v1/schools/{w.school_a}/update-policy", headers=await api.admin())
    ).json()
    assert body["uplink_share"] == 0.4 and len(body["windows"]) == 2


async def test_an_api_token_is_created_from_the_console_and_shown_once(api: Api) -> None:
    w, _csrf = await signed_in(api, Role.ADMIN)
    page = await api.client.get("/admin")
    csrf = csrf_of(page.text)
    r = await post(api.client, "/admin/tokens", csrf, name="", role="pilot", school="", days="0")
    assert r.status_code == 200
    assert field_error(r.text, "t-name") == "1 to 120 characters." and "from 1 to 3650" in r.text
    r = await post(
        api.client, "/admin/tokens", csrf, name="grafana", role="auditor", school=str(w.school_a), days="30"
    )
    secret = re.search(r'<p class="secret" id="api-token">([^<]+)</p>', r.text)
    assert r.status_code == 200 and secret
    # The token works against the API, scoped to its school.
    h = {"Authorization": f"Bearer {secret.group(1)}"}
    schools = (await api.client.get("/api/v1/schools", headers=h)).json()["items"]
    assert [s["id"] for s in schools] == [w.school_a]
    assert secret.group(1) not in (await api.client.get("/admin")).text  # shown once
    async with unit_of_work(api.sessions) as s:
        row = (await s.execute(select(ApiToken).where(ApiToken.name == "grafana"))).scalar_one()
    assert row.expires_at is not None and row.school_ids == [w.school_a]
    assert await actors(api, "token.create") == ["u-admin"]
    # Without the page's token the post is refused and nothing is created.
    r = await api.client.post("/admin/tokens", data={"name": "forged", "role": "admin", "school": ""})
    assert r.status_code == 403 and "security token" in r.text


async def test_the_audit_log_names_actions_in_the_users_language_newest_first(api: Api) -> None:
    w, csrf = await signed_in(api, Role.ADMIN, locale="zh_CN")
    r = await post(
        api.client, f"{PERIODS}/{w.school_a}/periods", csrf, weekday="0", name="P9", start_time="15:00",
        end_time="15:40",
    )  # fmt: skip
    assert r.status_code == 303
    page = await api.client.get("/admin/audit")
    assert page.status_code == 200
    # The menu reads "设备" (devices), not "设备数" (a report column's "number of devices").
    assert re.search(r'<a [^>]*href="/devices"[^>]*>\s*设备\s*</a>', page.text), "menu item for devices"
    cells = re.findall(r'<td title="([a-z_.]+)">([^<]*)</td>', page.text)
    shown = {code: text for code, text in cells if "." in code}
    assert shown.get("bell_period.create") == "作息时段 · 创建"
    assert shown.get("user.sign_in") == "用户 · 登录"
    for code, text in cells:
        assert code not in text and "_" not in text, (code, text)
    # What changed reads as named fields, not as the record's JSON document.
    details = " ".join(re.findall(r'<td class="muted">([^<]*)</td>', page.text))
    assert "名称: P9" in details and "学校: " in details
    assert "{" not in details and "&#34;" not in details and "school_id" not in details
    # The newest entry is listed first: the period was added after the sign-in (the world's setup before).
    order = [code for code, _text in cells if "." in code]
    assert order[:2] == ["bell_period.create", "user.sign_in"], order


async def test_newest_first_pages_cover_every_entry_once_in_descending_order(api: Api) -> None:
    from fleet.domain.permissions import SYSTEM
    from fleet.services import audit

    await build_world(api)
    async with unit_of_work(api.sessions) as s:
        every = sorted((await s.execute(select(AuditEntry.id))).scalars(), reverse=True)
        seen: list[int] = []
        cursor = None
        while True:
            page = await audit.list_entries(s, SYSTEM, cursor=cursor, limit=3, newest_first=True)
            assert page.total == len(every)
            seen += [e.id for e in page.items]
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        oldest = await audit.list_entries(s, SYSTEM, cursor=None, limit=3)
    assert len(every) > 6 and seen == every
    # The API's default order is unchanged: oldest first.
    assert [e.id for e in oldest.items] == sorted(every)[:3]
