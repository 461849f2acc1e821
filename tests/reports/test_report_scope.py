"""Scope through the API: a procurement officer scoped to school A gets reports with only school A's data."""

from __future__ import annotations

import io

from openpyxl import load_workbook

from fleet.services.reports import REPORTS, REQUIRES
from tests.conftest import Api
from tests.reports.conftest import get_report, rows
from tests.reports.district import Fixture

B_MARKERS = ("school-b", "AT-b1", "AT-b2", "B-101", "lease-co", "PO-3", "PO-00")


async def test_procurement_scoped_to_school_a_sees_only_school_a(rapi: Api, district: Fixture) -> None:
    a = (district.school_a,)
    for name in REPORTS:
        # The security inspection is for auditors (and administrators): an auditor scoped to school A.
        role = "auditor" if name in REQUIRES else "procurement"
        for fmt in ("json", "csv", "html"):
            r = await rapi.client.get(
                f"/api/v1/reports/{name}",
                params={"format": fmt, "start": "2024-01-01", "end": "2026-06-30"},
                headers=await rapi.as_(role, a),
            )
            assert r.status_code == 200, (name, fmt, r.text)
            leaked = [m for m in B_MARKERS if m in r.text]
            assert not leaked, (name, fmt, leaked)
        r = await rapi.client.get(
            f"/api/v1/reports/{name}", params={"format": "xlsx"}, headers=await rapi.as_(role, a)
        )
        wb = load_workbook(io.BytesIO(r.content))
        cells = {str(c) for ws in wb.worksheets for row in ws.iter_rows(values_only=True) for c in row}
        assert not [m for m in B_MARKERS if any(m in c for c in cells)], name
    inv = await get_report(rapi, "inventory", role="procurement", schools=a, end="2026-06-30")
    assert inv["summary"]["devices"] == 5  # a1..a5
    assert [r["school_code"] for r in rows(inv, "by_school")] == ["school-a"]
    assert inv["filters"] == {"caller scope": "school-a"}
    cov = await get_report(rapi, "coverage", role="procurement", schools=a, end="2026-06-30")
    assert rows(cov, "below_quota") == []  # B-101 is school B's
    # Filtering by the district narrows nothing beyond the caller's scope.
    by_district = await get_report(
        rapi, "inventory", role="procurement", schools=a, end="2026-06-30", district=district.district
    )
    assert by_district["summary"]["devices"] == 5
    # District-wide, the same report has school B too.
    assert (await get_report(rapi, "inventory", end="2026-06-30"))["summary"]["devices"] == 7


async def test_school_outside_scope_is_not_found_and_other_roles_are_refused(
    rapi: Api, district: Fixture
) -> None:
    headers = await rapi.as_("procurement", (district.school_a,))
    r = await rapi.client.get(
        "/api/v1/reports/inventory", params={"school": district.school_b}, headers=headers
    )
    assert r.status_code == 404
    r = await rapi.client.get(
        "/api/v1/reports/inventory", headers=await rapi.as_("technician", (district.school_a,))
    )
    assert r.status_code == 403
