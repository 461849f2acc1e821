"""The screen-time report (issue 15, point 6): each figure worked out by hand from a few terminal-days of the
usage_screen roll-up, on SQLite and PostgreSQL, in every format."""

from __future__ import annotations

import io
from datetime import date
from typing import Any

from openpyxl import load_workbook

from fleet.persistence.db import unit_of_work
from fleet.persistence.models import Room
from fleet.persistence.models_mqtt import UsageScreen
from tests.conftest import Api
from tests.reports.conftest import get_report, rows
from tests.reports.district import DEVICES, Fixture

JUNE = {"start": "2026-06-01", "end": "2026-06-28"}

# (device, day, use s, sessions, long, breaks, limit locks, no policy, longest s, session limit, daily limit)
DAYS = [
    # a1, 1 June: 100 min against a 90-min daily limit (over), one 55-min session against 40 (long).
    ("a1", date(2026, 6, 1), 6000, 3, 1, 1, 0, 0, 3300, 40, 90),
    # a1, 2 June: 80 min, two breaks enforced, under the limit.
    ("a1", date(2026, 6, 2), 4800, 2, 0, 2, 0, 0, 2400, 40, 90),
    # a2, 1 June: exactly the 90-min limit (not over), locked by it once.
    ("a2", date(2026, 6, 1), 5400, 3, 0, 1, 1, 0, 2400, 40, 90),
    # a4 (A-Lab), 2 June: 130 min against 120 (over), two sessions past 45.
    ("a4", date(2026, 6, 2), 7800, 3, 2, 0, 0, 0, 3000, 45, 120),
    # b1 (B-101): no policy at all: 30 min, then 200 min; never long, never over.
    ("b1", date(2026, 6, 1), 1800, 1, 0, 0, 0, 1, 1800, None, None),
    ("b1", date(2026, 6, 3), 12000, 2, 0, 0, 0, 2, 7200, None, None),
    # Outside 1..28 June: must not count.
    ("a1", date(2026, 5, 31), 9000, 1, 1, 0, 0, 0, 9000, 40, 90),
    ("a1", date(2026, 6, 29), 9000, 1, 1, 0, 0, 0, 9000, 40, 90),
]


async def add_screen_days(api: Api, district: Fixture) -> None:
    async with unit_of_work(api.sessions) as s:
        room_ids = {r.name: r.id for r in (await s.execute(Room.__table__.select())).all()}
        schools = {"A": district.school_a, "B": district.school_b}
        for name, day, secs, n, long, breaks, locks, unmanaged, longest, slim, dlim in DAYS:
            s.add(
                UsageScreen(
                    device_id=district.devices[name],
                    school_id=schools[DEVICES[name][1]],
                    room_id=room_ids[DEVICES[name][2]],
                    day=day,
                    use_seconds=secs,
                    sessions=n,
                    long_sessions=long,
                    breaks=breaks,
                    limit_locks=locks,
                    unmanaged_sessions=unmanaged,
                    longest_seconds=longest,
                    session_limit_min=slim,
                    daily_limit_min=dlim,
                )
            )


def figures(row: dict[str, Any]) -> tuple[Any, ...]:
    keys = (
        "terminals",
        "terminal_days",
        "use_minutes",
        "minutes_per_terminal_day",
        "sessions",
        "long_sessions",
        "breaks",
        "limit_locks",
        "unmanaged_sessions",
        "days_over_limit",
        "terminals_over_limit",
    )
    return tuple(row[k] for k in keys)


async def test_screen_time_minutes_long_sessions_breaks_and_over_limit_per_school_room_and_day(
    rapi: Api, district: Fixture
) -> None:
    await add_screen_days(rapi, district)
    rep = await get_report(rapi, "screentime", **JUNE)
    # School A: a1 6000 + 4800, a2 5400, a4 7800 = 24,000 s = 400 min over 4 terminal-days = 100.0 a day;
    # sessions 3+2+3+3 = 11, long 1+2 = 3, breaks 1+2+1 = 4, one daily-limit lock (a2); over the limit on
    # a1's 1 June (6000 > 5400) and a4's 2 June (7800 > 7200); a2's 5400 = 5400 is not over.
    # School B: b1 1800 + 12000 = 13,800 s = 230 min over 2 days = 115.0; 3 sessions, all without a policy.
    by_school = {r["school_code"]: figures(r) for r in rows(rep, "by_school")}
    assert by_school == {
        "school-a": (3, 4, 400, 100.0, 11, 3, 4, 1, 0, 2, 2),
        "school-b": (1, 2, 230, 115.0, 3, 0, 0, 0, 3, 0, 0),
    }
    by_school_section = next(s for s in rep["sections"] if s["key"] == "by_school")
    # Total: 37,800 s = 630 min over 6 terminal-days = 105.0.
    assert figures(by_school_section["totals"]) == (4, 6, 630, 105.0, 14, 3, 4, 1, 3, 2, 2)
    assert by_school_section["totals"]["school_code"] == "Total"

    by_room = {r["room"]: figures(r) for r in rows(rep, "by_room")}
    assert by_room == {
        "A-101": (2, 3, 270, 90.0, 8, 1, 4, 1, 0, 1, 1),  # 16,200 s over a1's 2 days and a2's 1
        "A-Lab": (1, 1, 130, 130.0, 3, 2, 0, 0, 0, 1, 1),
        "B-101": (1, 2, 230, 115.0, 3, 0, 0, 0, 3, 0, 0),
    }

    # Per day: 1 June a1 + a2 + b1 = 13,200 s = 220 min / 3 = 73.3; 2 June a1 + a4 = 210 min / 2 = 105.0;
    # 3 June b1 200 min. 31 May and 29 June are outside the range.
    per_day = [
        (
            r["day"],
            r["terminals"],
            r["use_minutes"],
            r["minutes_per_terminal"],
            r["long_sessions"],
            r["breaks"],
            r["limit_locks"],
            r["unmanaged_sessions"],
            r["terminals_over_limit"],
        )
        for r in rows(rep, "by_day")
    ]
    assert per_day == [
        ("2026-06-01", 3, 220, 73.3, 1, 2, 1, 1, 1),
        ("2026-06-02", 2, 210, 105.0, 2, 2, 0, 0, 1),
        ("2026-06-03", 1, 200, 200.0, 0, 0, 0, 2, 0),
    ]
    day_totals = next(s for s in rep["sections"] if s["key"] == "by_day")["totals"]
    assert (day_totals["use_minutes"], day_totals["long_sessions"], day_totals["terminals_over_limit"]) == (
        630,
        3,
        2,
    )

    # The terminals to look at: a4 (1 day over, 2 long sessions) before a1 (1 day over, 1 long); b1 has
    # neither (no policy) and a2 reached its limit without passing it.
    assert [tuple(r.values()) for r in rows(rep, "terminals")] == [
        ("AT-a4", "school-a", "A-Lab", 1, 130.0, 130, 120, 1, 2, 50, 45, 0),
        ("AT-a1", "school-a", "A-101", 2, 90.0, 100, 90, 1, 1, 55, 40, 0),
    ]
    s = rep["summary"]
    assert (s["use_minutes"], s["minutes_per_terminal_day"], s["long_sessions"], s["breaks"]) == (
        630,
        105.0,
        3,
        4,
    )
    assert (s["terminals_over_limit"], s["days_over_limit"], s["unmanaged_sessions"]) == (2, 2, 3)


async def test_screen_time_for_a_school_scoped_caller_shows_only_that_school(
    rapi: Api, district: Fixture
) -> None:
    await add_screen_days(rapi, district)
    rep = await get_report(rapi, "screentime", role="procurement", schools=(district.school_b,), **JUNE)
    assert [r["school_code"] for r in rows(rep, "by_school")] == ["school-b"]
    assert rep["summary"]["use_minutes"] == 230 and rows(rep, "terminals") == []


async def test_screen_time_in_every_format_and_in_chinese(rapi: Api, district: Fixture) -> None:
    await add_screen_days(rapi, district)
    headers = await rapi.admin()
    for fmt in ("json", "csv", "xlsx", "html", "pdf"):
        r = await rapi.client.get(
            "/api/v1/reports/screentime", params={"format": fmt, "lang": "zh-CN", **JUNE}, headers=headers
        )
        assert r.status_code == 200, (fmt, r.text[:300])
        if fmt == "csv":
            text = r.content.decode("utf-8-sig")
            assert "屏幕使用时长" in text and "超出政策允许时长的连续使用" in text and "合计" in text
        elif fmt == "html":
            assert "屏幕使用时长" in r.text and "按学校" in r.text and "智慧教室" in r.text
        elif fmt == "pdf":
            assert r.content.startswith(b"%PDF")
        elif fmt == "xlsx":
            wb = load_workbook(io.BytesIO(r.content))
            assert "按学校" in wb.sheetnames
            sheet = wb["按学校"]
            header = [c.value for c in sheet[1]]
            assert "每台终端每天使用分钟数" in header
            last = [c.value for c in sheet[sheet.max_row]]
            assert last[0] == "合计" and 630 in last


async def test_the_console_reports_page_lists_screen_time_and_serves_its_files(
    rapi: Api, district: Fixture
) -> None:
    from tests.console.helpers import add_user, sign_in

    await add_screen_days(rapi, district)
    await add_user(rapi.sessions, rapi.clock, "procure-zh", "procurement", locale="zh_CN")
    await sign_in(rapi.client, "procure-zh")
    page = await rapi.client.get("/reports", params={"name": "screentime", **JUNE})
    assert (
        page.status_code == 200 and '<option value="screentime" selected>屏幕使用时长</option>' in page.text
    )
    html = await rapi.client.get("/reports/screentime/file", params={"format": "html", **JUNE})
    assert html.status_code == 200 and "超出每日上限的终端" in html.text
    xlsx = await rapi.client.get("/reports/screentime/file", params={"format": "xlsx", **JUNE})
    assert (
        xlsx.status_code == 200
        and "screentime-2026-06-01-2026-06-28.xlsx" in xlsx.headers["content-disposition"]
    )
