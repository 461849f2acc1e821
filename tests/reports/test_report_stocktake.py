"""The stocktake report (issue 21, point 3): each figure worked out by hand from a few counts of the fixture
district's rooms, on SQLite and PostgreSQL, in every format and in Chinese."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from typing import Any

from openpyxl import load_workbook

from fleet.persistence.db import unit_of_work
from fleet.persistence.models import CalendarDay, Room
from fleet.persistence.models_stocktake import Stocktake, StocktakeLine
from tests.conftest import Api
from tests.reports.conftest import get_report, rows
from tests.reports.district import Fixture

H1 = {"start": "2026-01-01", "end": "2026-06-30"}


def at(m: int, d: int, y: int = 2026) -> datetime:
    return datetime(y, m, d, 9, 30, tzinfo=UTC)


# room: [(finished, [(device, status, resolution)])]; the tallies are the lines' own.
COUNTS: dict[str, list[tuple[datetime | None, list[tuple[str, str, str | None]]]]] = {
    "A-101": [
        # Before school A's term (it began 20 February): counts as "last counted" only if nothing later.
        (at(2, 10), [("a1", "found", None), ("a2", "missing", None)]),
        (at(3, 15), [("a1", "missing", None), ("a2", "missing", None)]),
        # The last count: a1 is back, a2 missing again (twice in a row), a4 met here and moved here.
        (at(5, 20), [("a1", "found", None), ("a2", "missing", None), ("a4", "unexpected", "moved_here")]),
    ],
    # Counted only before the term: "not counted this term", though its last count is shown.
    "A-Lab": [(at(1, 15), [("a4", "found", None), ("a5", "found", None)])],
    # A-AI: never counted.
    "B-101": [
        (at(4, 1), [("b1", "missing", None), ("b2", "missing", None)]),
        # b1 missing again but marked lost: settled, so only b2 is "missing twice".
        (at(6, 10), [("b1", "missing", "marked_lost"), ("b2", "missing", None)]),
        # After the end date, and an open count: neither is read.
        (at(7, 5), [("b1", "found", None), ("b2", "found", None)]),
        (None, [("b2", "found", None)]),
    ],
}


async def add_counts(api: Api, district: Fixture) -> None:
    async with unit_of_work(api.sessions) as s:
        room_ids = {r.name: (r.id, r.school_id) for r in (await s.execute(Room.__table__.select())).all()}
        # School A's term began 20 February; school B has no term in the calendar (the report's start).
        s.add(
            CalendarDay(
                school_id=district.school_a,
                kind="term",
                name="Spring",
                start_date=date(2026, 2, 20),
                end_date=date(2026, 7, 10),
            )
        )
        for room, counts in COUNTS.items():
            room_id, school_id = room_ids[room]
            for finished, lines in counts:
                statuses = [status for _d, status, _r in lines]
                resolutions = [r for _d, _s, r in lines]
                st = Stocktake(
                    school_id=school_id,
                    room_id=room_id,
                    started_by="user:1:tech",
                    started_at=(finished or at(6, 20)).replace(hour=8),
                    finished_at=finished,
                    finished_by="user:1:tech" if finished else None,
                    found=statuses.count("found"),
                    missing=statuses.count("missing"),
                    unexpected=statuses.count("unexpected"),
                    moved=resolutions.count("moved_here"),
                    lost=resolutions.count("marked_lost"),
                )
                s.add(st)
                await s.flush()
                for device, status, resolution in lines:
                    s.add(
                        StocktakeLine(
                            stocktake_id=st.id,
                            device_id=district.devices[device],
                            status=status,
                            seen_by_network=False,
                            resolution=resolution,
                        )
                    )


def figures(row: dict[str, Any], *keys: str) -> tuple[Any, ...]:
    return tuple(row[k] for k in keys)


ROOM_KEYS = ("last_counted", "counts_this_term", "found", "missing", "unexpected", "moved", "lost")


async def test_last_count_per_room_rooms_not_counted_this_term_and_devices_missing_twice(
    rapi: Api, district: Fixture
) -> None:
    await add_counts(rapi, district)
    rep = await get_report(rapi, "stocktake", **H1)
    by_room = {(r["school_code"], r["room"]): figures(r, *ROOM_KEYS) for r in rows(rep, "by_room")}
    assert by_room == {
        # Last count 20 May: 1 found, 1 missing, 1 from elsewhere moved here; 2 counts since 20 February.
        ("school-a", "A-101"): ("2026-05-20T09:30:00+00:00", 2, 1, 1, 1, 1, 0),
        ("school-a", "A-AI"): (None, 0, None, None, None, None, None),
        ("school-a", "A-Lab"): ("2026-01-15T09:30:00+00:00", 0, 2, 0, 0, 0, 0),
        # Last count up to 30 June is 10 June (the 5 July one is after the end); both of B's counts are in
        # the range, which stands for its term.
        ("school-b", "B-101"): ("2026-06-10T09:30:00+00:00", 2, 0, 2, 0, 0, 1),
    }
    by_school = {r["school_code"]: r for r in rows(rep, "by_school")}
    keys = ("rooms", "rooms_counted", "found", "missing", "unexpected", "moved", "lost")
    assert figures(by_school["school-a"], *keys) == (3, 1, 3, 1, 1, 1, 0)
    assert figures(by_school["school-b"], *keys) == (1, 1, 0, 2, 0, 0, 1)
    totals = next(s for s in rep["sections"] if s["key"] == "by_school")["totals"]
    assert figures(totals, *keys) == (4, 2, 3, 3, 1, 1, 1) and totals["school_code"] == "Total"

    not_counted = [figures(r, "room", "term_start", "last_counted") for r in rows(rep, "not_counted")]
    assert not_counted == [
        ("A-AI", "2026-02-20", None),
        ("A-Lab", "2026-02-20", "2026-01-15T09:30:00+00:00"),
    ]
    twice = [
        figures(r, "asset_tag", "room", "first_missed", "missed_again") for r in rows(rep, "missing_twice")
    ]
    assert twice == [
        ("AT-a2", "A-101", "2026-03-15T09:30:00+00:00", "2026-05-20T09:30:00+00:00"),
        ("AT-b2", "B-101", "2026-04-01T09:30:00+00:00", "2026-06-10T09:30:00+00:00"),
    ]
    s = rep["summary"]
    assert figures(s, "rooms", "rooms_counted", "rooms_not_counted", "found", "missing", "moved") == (
        4,
        2,
        2,
        3,
        3,
        1,
    )
    assert s["missing_twice"] == 2


async def test_a_school_scoped_caller_sees_only_its_rooms(rapi: Api, district: Fixture) -> None:
    await add_counts(rapi, district)
    rep = await get_report(rapi, "stocktake", role="procurement", schools=(district.school_b,), **H1)
    assert [figures(r, "room", *ROOM_KEYS) for r in rows(rep, "by_room")] == [
        ("B-101", "2026-06-10T09:30:00+00:00", 2, 0, 2, 0, 0, 1)
    ]
    assert [r["asset_tag"] for r in rows(rep, "missing_twice")] == ["AT-b2"]


async def test_the_stocktake_report_in_every_format_and_in_chinese(rapi: Api, district: Fixture) -> None:
    await add_counts(rapi, district)
    headers = await rapi.admin()
    for fmt in ("json", "csv", "xlsx", "html", "pdf"):
        r = await rapi.client.get(
            "/api/v1/reports/stocktake", params={"format": fmt, "lang": "zh-CN", **H1}, headers=headers
        )
        assert r.status_code == 200, (fmt, r.text[:300])
        if fmt == "csv":
            text = r.content.decode("utf-8-sig")
            assert "教室盘点" in text and "连续两次盘点缺失的设备" in text and "AT-a2" in text
        elif fmt == "html":
            assert "本学期未盘点的教室" in r.text and "按教室" in r.text and "智慧教室" in r.text
        elif fmt == "pdf":
            assert r.content.startswith(b"%PDF")
        elif fmt == "xlsx":
            wb = load_workbook(io.BytesIO(r.content))
            assert "按学校" in wb.sheetnames
            sheet = wb["按学校"]
            header = [c.value for c in sheet[1]]
            assert "本学期已盘点的教室" in header
            last = [c.value for c in sheet[sheet.max_row]]
            assert last[0] == "合计" and last[2:5] == [4, 2, 3]
    r = await rapi.client.get("/api/v1/reports/stocktake", params={"format": "csv", **H1}, headers=headers)
    assert "Devices missing in two consecutive counts" in r.content.decode("utf-8-sig")
