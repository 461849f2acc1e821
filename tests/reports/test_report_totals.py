"""Totals rows where sums make sense (issue 15, points 3-5), worked out by hand on the fixture district
(tests/reports/district.py), and carried into XLSX, HTML and PDF."""

from __future__ import annotations

import io
import re
from typing import Any

from openpyxl import load_workbook

from tests.conftest import Api
from tests.reports.conftest import get_report
from tests.reports.district import Fixture

H1_2026 = {"start": "2026-01-01", "end": "2026-06-30"}
JUNE_4_WEEKS = {"start": "2026-06-01", "end": "2026-06-28"}


def totals(report: dict[str, Any], section: str) -> dict[str, Any]:
    found = next(s["totals"] for s in report["sections"] if s["key"] == section)
    assert found is not None, f"{section} has no totals row"
    return dict(found)


async def test_coverage_totals_per_school_per_kind_and_below_quota(rapi: Api, district: Fixture) -> None:
    rep = await get_report(rapi, "coverage", **H1_2026)
    # Fielded on 30 June: a1, a2 (A-101, quota 2), a4, a5 (A-Lab, quota 1), a3 (robot, A-AI, quota 0), b1
    # (B-101, quota 3); b2 retired in April. Equipped: A-101, A-Lab, A-AI (one device); B-101 is 2 short.
    # Terminals: everything but the robot, 5.
    assert totals(rep, "by_school") == {
        "school_code": "Total", "school": None, "rooms": 4, "equipped": 3, "quota": 6, "deployed": 6,
        "terminals": 5,
    }  # fmt: skip
    # Quota filled over the district: 6 deployed / 6 quota, not the sum of the rows' shares.
    assert totals(rep, "by_school_kind") == {
        "school_code": "Total", "school": None, "room_kind": None, "rooms": 4, "equipped": 3, "quota": 6,
        "deployed": 6, "terminals": 5, "fill": 1.0,
    }  # fmt: skip
    assert totals(rep, "below_quota") == {
        "school_code": "Total", "room": None, "room_kind": None, "quota": 3, "deployed": 1, "shortfall": 2,
    }  # fmt: skip
    # The plan's rows are different metrics: adding them up means nothing.
    assert next(s["totals"] for s in rep["sections"] if s["key"] == "plan") is None


async def test_utilisation_totals_average_per_device_week_and_sum_minutes(
    rapi: Api, district: Fixture
) -> None:
    rep = await get_report(rapi, "utilisation", **JUNE_4_WEEKS)
    # Minutes in 1..28 June: a1 160, a2 20, a3 600, b1 100, a4 and a5 none = 880 over 6 fielded devices and 4
    # weeks: 880 / 6 / 4 = 36.7 a device a week. Idle (< 40 a week): a2, a4, a5, b1.
    assert totals(rep, "by_model") == {
        "model": "Total", "devices": 6, "active_minutes": 880, "minutes_per_device_week": 36.7, "idle": 4,
    }  # fmt: skip
    # Every device sits in a room; seats 2 + 1 + 0 + 3.
    assert totals(rep, "by_room") == {
        "school_code": "Total", "room": None, "room_kind": None, "capacity": 6, "devices": 6,
        "active_minutes": 880, "minutes_per_device_week": 36.7, "idle": 4,
    }  # fmt: skip
    # The idle ones: 20 + 0 + 0 + 100 = 120 minutes, 120 / 4 / 4 = 7.5 a device a week.
    idle = totals(rep, "idle")
    assert (idle["asset_tag"], idle["active_minutes"], idle["minutes_per_week"], idle["idle"]) == (
        "Total", 120, 7.5, None,
    )  # fmt: skip
    per_device = totals(rep, "by_device")
    assert (per_device["active_minutes"], per_device["minutes_per_week"]) == (880, 36.7)
    # A-Lab seats 1 and holds 2 (A-AI's quota of 0 means no quota, not "over").
    assert totals(rep, "over_capacity") == {
        "school_code": "Total", "room": None, "room_kind": None, "capacity": 1, "devices": 2, "excess": 1,
    }  # fmt: skip


async def test_warranty_and_budget_totals_are_the_sums_of_their_money_columns(
    rapi: Api, district: Fixture
) -> None:
    rep = await get_report(rapi, "warranty", **H1_2026)
    # Ending soon: a3 (the R1 robot, 1000.00). Out of warranty and faulty: a4 (LT-100, 300.00).
    assert totals(rep, "expiring")["unit_price"] == 1000.0
    assert totals(rep, "out_with_faults")["replacement_cost"] == 300.0
    assert totals(rep, "by_model") == {
        "model": "Total", "supplier": None, "expiring": 1, "out_with_faults": 1, "unit_price": None,
        "replacement_cost": 300.0,
    }  # fmt: skip
    budget = await get_report(rapi, "budget", **H1_2026)
    planned = next(s for s in budget["sections"] if s["key"] == "replacements")
    assert (
        planned["totals"]["unit_price"]
        == budget["summary"]["replacement_cost"]
        == sum(r["unit_price"] for r in planned["rows"])
    )


async def test_the_new_totals_rows_print_in_xlsx_and_html(rapi: Api, district: Fixture) -> None:
    headers = await rapi.admin()
    r = await rapi.client.get(
        "/api/v1/reports/coverage", params={"format": "xlsx", "lang": "zh-CN", **H1_2026}, headers=headers
    )
    wb = load_workbook(io.BytesIO(r.content))
    ws = wb["按学校"]
    last = [c.value for c in ws[ws.max_row]]
    assert last[0] == "合计" and ws.cell(ws.max_row, 1).font.b and last[2:] == [4, 3, 6, 6, 5]
    r = await rapi.client.get(
        "/api/v1/reports/utilisation", params={"format": "html", **JUNE_4_WEEKS}, headers=headers
    )
    page = r.text
    by_model = page[page.index('data-section="by_model"') :]
    foot = re.search(r'<tfoot><tr class="totals">(.*?)</tr></tfoot>', by_model)
    assert foot is not None
    assert re.findall(r"<td[^>]*>([^<]*)</td>", foot.group(1)) == ["Total", "6", "880", "36.70", "4"]
