"""Figures a procurement office can sign, each worked out by hand on the fixture district
(tests/reports/district.py):
the reliability window, downtime never after now, an empty budget year, owned against leased, the model's
price
for a missing cost, totals rows, and no 500 from a stored 9999-12-31."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import update

from fleet.persistence.db import unit_of_work
from fleet.persistence.models import Device, DeviceModel, DeviceTransition
from tests.conftest import Api
from tests.reports.conftest import get_report, rows
from tests.reports.district import Fixture, at

DAYS_PER_MONTH = 365.25 / 12
H1_2026 = {"start": "2026-01-01", "end": "2026-06-30"}


async def test_reliability_counts_from_the_later_of_purchase_and_first_record(
    rapi: Api, district: Fixture
) -> None:
    # z1: recorded (a bench test) from 1 Jan 2026, bought 1 Mar 2026. Its February repair predates the
    # purchase.
    async with unit_of_work(rapi.sessions) as s:
        m = DeviceModel(
            vendor="Zeta", model_number="Z9", kind="terminal", transport="mqtt", unit_price=Decimal("100.00"),
            warranty_months=12, supplier="ZetaCo", created_at=at(2026, 1, 1),
        )  # fmt: skip
        s.add(m)
        await s.flush()
        dev = Device(
            vendor="Zeta", serial_number="SN-z1", asset_tag="AT-z1", model_id=m.id,
            school_id=district.school_b, status="in_service", purchase_date=date(2026, 3, 1),
            unit_cost=Decimal("100.00"), ownership="owned",
            created_at=at(2026, 1, 1), updated_at=at(2026, 4, 2),
        )  # fmt: skip
        s.add(dev)
        await s.flush()
        prev = None
        for when, to in (
            (at(2026, 1, 1), "received"),
            (at(2026, 1, 2), "in_service"),
            (at(2026, 2, 1), "in_repair"),
            (at(2026, 2, 5), "in_service"),
            (at(2026, 4, 1), "in_repair"),
            (at(2026, 4, 2), "in_service"),
        ):
            s.add(DeviceTransition(device_id=dev.id, from_status=prev, to_status=to, actor="t", at=when))
            prev = to
    rep = await get_report(rapi, "reliability", **H1_2026)
    z9 = next(r for r in rows(rep, "by_model") if r["model"] == "Zeta Z9")
    # Window 1 Mar..1 Jul: in service 1 Mar..1 Apr (31 days) + 2 Apr..1 Jul (90 days) = 121 days; one
    # failure (1 Apr).
    assert z9["device_months"] == round(121 / DAYS_PER_MONTH, 2) == 3.98
    assert (z9["failures"], z9["repair_hours"]) == (1, 24.0)
    assert z9["failures_per_100"] == round(100 / (121 / DAYS_PER_MONTH), 2)
    assert any("later of its purchase date and its first record" in n for n in rep["notes"])


async def test_downtime_never_counts_hours_after_now(rapi: Api, district: Fixture) -> None:
    rapi.clock.set(datetime(2026, 6, 25, tzinfo=UTC))
    rep = await get_report(rapi, "reliability", **H1_2026)
    lt = next(r for r in rows(rep, "by_model") if r["model"] == "EduTech LT-100")
    # a4 went into repair on 20 June: 5 days until now (25 June), not the 11 days to the end of the range.
    # In repair: a1 240 h + 120 h, a4 120 h = 480 h; unexpected offline a2 8 h.
    assert (lt["repair_hours"], lt["offline_hours"], lt["downtime_hours"]) == (480.0, 8.0, 488.0)
    # In service stops at now too: a1 166 - 6, a2 181 - 6, a4 170, b1 141 - 6, b2 90 days.
    assert lt["device_months"] == round((160 + 175 + 170 + 135 + 90) / DAYS_PER_MONTH, 2)


async def test_an_empty_budget_year_says_no_spend_not_target_missed(rapi: Api, district: Fixture) -> None:
    rep = await get_report(rapi, "budget", start="2022-01-01", end="2022-12-31", budget="5000")
    (year,) = rows(rep, "ai_share")
    assert (year["year"], year["devices"], year["ai_share"], year["met"], year["result"]) == (
        2022, 0, None, None, "no spend",
    )  # fmt: skip
    assert rep["summary"]["ai_target_met"] is None and rep["summary"]["ai_share"] is None
    assert any("No equipment spend" in n for n in rep["notes"])
    zh = await get_report(rapi, "budget", start="2022-01-01", end="2022-12-31", lang="zh-CN")
    assert rows(zh, "ai_share")[0]["result"] == "无支出"


async def test_owned_and_leased_are_kept_apart_and_a_missing_cost_is_the_models_price(
    rapi: Api, district: Fixture
) -> None:
    rep = await get_report(rapi, "inventory", **H1_2026)
    lt = next(r for r in rows(rep, "by_model") if r["model"] == "EduTech LT-100")
    # Owned LT-100: a1 300 + a2 300 + a4 280 + b2 250 + a5 (no cost: the model's 300) = 1430; b1 leased 300
    # apart.
    assert (lt["devices"], lt["cost"], lt["leased_value"]) == (6, 1430.0, 300.0)
    assert rep["summary"]["purchase_cost"] == 1430.0 + 1000.0  # + a3, the R1 robot
    assert rep["summary"]["leased_value"] == 300.0 and rep["summary"]["priced_from_model"] == 1
    totals = next(s["totals"] for s in rep["sections"] if s["key"] == "by_model")
    assert totals["model"] == "Total"
    assert (totals["devices"], totals["owned"], totals["leased"], totals["cost"], totals["leased_value"]) == (
        7, 6, 1, 2430.0, 300.0,
    )  # fmt: skip
    assert next(s["totals"] for s in rep["sections"] if s["key"] == "by_status")["devices"] == 7
    # The budget never counts the lease as spend: H1 2026 bought only b1 (leased) and a5 (no date): no spend.
    budget = await get_report(rapi, "budget", **H1_2026)
    assert budget["summary"]["spend"] == 0.0 and rows(budget, "ai_share")[0]["result"] == "no spend"
    by_source = {r["funding_source"]: r for r in rows(budget, "book_by_source")}
    assert "lease-co" not in by_source


async def test_a_stored_purchase_date_of_9999_breaks_no_report(rapi: Api, district: Fixture) -> None:
    async with unit_of_work(rapi.sessions) as s:
        await s.execute(
            update(Device).where(Device.id == district.devices["a1"]).values(purchase_date=date(9999, 12, 31))
        )
    for name in ("coverage", "inventory", "reliability", "warranty", "utilisation", "budget"):
        for fmt in ("json", "csv", "xlsx", "html"):
            r = await rapi.client.get(
                f"/api/v1/reports/{name}", params={"format": fmt}, headers=await rapi.admin()
            )
            assert r.status_code == 200, (name, fmt, r.text[:300])
    rep = await get_report(rapi, "warranty", **H1_2026)
    assert rep["summary"]["no_purchase_date"] == 2  # a5 and a1, whose stored date is read as unknown
    assert any("1990-01-01" in n for n in rep["notes"])
