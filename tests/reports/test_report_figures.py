"""Each report's figures on the fixture district (tests/reports/district.py), worked out by hand here."""

from __future__ import annotations

from tests.conftest import Api
from tests.reports.conftest import get_report, rows
from tests.reports.district import Fixture

DAYS_PER_MONTH = 365.25 / 12


async def test_coverage_counts_equipped_rooms_and_deployed_terminals_against_targets(
    rapi: Api, district: Fixture
) -> None:
    rep = await get_report(rapi, "coverage", start="2026-01-01", end="2026-06-30")
    # Deployed on 30 June: A-101 a1, a2 (quota 2: equipped); A-Lab a4 (in repair), a5 (quota 1: equipped,
    # over); A-AI a3 (quota 0: one device equips it); B-101 b1 only, b2 retired (quota 3: below by 2).
    plan = {r["metric"]: r for r in rows(rep, "plan")}
    assert plan["Smart classrooms equipped"] == {
        "metric": "Smart classrooms equipped",
        "target": 2,
        "actual": 1,
        "rooms": 2,
        "share": 0.5,
    }
    assert plan["Digital labs equipped"]["actual"] == 1 and plan["Digital labs equipped"]["share"] == 1.0
    assert plan["AI labs equipped"]["actual"] == 1 and plan["AI labs equipped"]["target"] is None
    # Terminals (model LT-100) fielded: a1, a2, a4, a5, b1 = 5 of 10.
    assert plan["Terminals deployed"]["actual"] == 5 and plan["Terminals deployed"]["share"] == 0.5
    assert rows(rep, "below_quota") == [
        {
            "school_code": "school-b",
            "room": "B-101",
            "room_kind": "smart_classroom",
            "quota": 3,
            "deployed": 1,
            "shortfall": 2,
        }
    ]
    per_kind = {(r["school_code"], r["room_kind"]): r for r in rows(rep, "by_school_kind")}
    assert per_kind[("school-a", "smart_classroom")]["fill"] == 1.0
    assert per_kind[("school-b", "smart_classroom")]["fill"] == round(1 / 3, 4)
    assert rep["summary"]["rooms_below_quota"] == 1


async def test_coverage_as_of_an_earlier_date_uses_lifecycle_history(rapi: Api, district: Fixture) -> None:
    # On 31 Dec 2025: a5 and b1 did not exist yet, b2 was still in service: B-101 has 1 of 3, A-Lab a4 only.
    rep = await get_report(rapi, "coverage", start="2025-01-01", end="2025-12-31")
    plan = {r["metric"]: r["actual"] for r in rows(rep, "plan")}
    assert plan["Terminals deployed"] == 4  # a1, a2, a4, b2


async def test_reliability_failure_rate_per_100_device_months_and_downtime(
    rapi: Api, district: Fixture
) -> None:
    rep = await get_report(rapi, "reliability", start="2026-01-01", end="2026-06-30")
    lt = next(r for r in rows(rep, "by_model") if r["model"] == "EduTech LT-100")
    # Days in service within 1 Jan..30 Jun 2026 (181 days):
    #   a1 181 - 10 (Feb repair) - 5 (May repair) = 166; a2 181; a4 1 Jan..20 Jun = 170;
    #   b1 10 Feb..1 Jul = 141; b2 1 Jan..1 Apr (retired) = 90; a5 only provisioned = 0.  Total 748 days.
    days = 166 + 181 + 170 + 141 + 90
    months = days / DAYS_PER_MONTH
    assert lt["devices"] == 6
    assert lt["device_months"] == round(months, 2) == 24.57
    # Failures (entries into repair): a1 twice, a4 once.
    assert lt["failures"] == 3
    assert lt["failures_per_100"] == round(3 * 100 / months, 2) == 12.21
    assert lt["mtbf_days"] == round(days / 3, 1) == 249.3
    # In repair: a1 240 h + 120 h, a4 20 Jun..1 Jul 264 h. Unexpected offline: a2 2 h + 6 h (18:00 was
    # expected).
    assert lt["repair_hours"] == 624.0
    assert lt["offline_hours"] == 8.0
    assert lt["downtime_hours"] == 632.0
    assert lt["repairs"] == 2  # a4 is still in repair
    assert lt["fault_alerts"] == 1  # a4's critical error_code alert; a2's battery warning is not a fault
    # a1's warranty (24 months from 15 Mar 2024) covered the February failure, not the May one; a4's had
    # ended.
    assert lt["warranty_claims"] == 1
    # Firmware updates finished in the range: a1, b1 succeeded, a2 failed, a4 rolled back (a5's was in 2025).
    assert (lt["fw_updates"], lt["fw_failure_rate"]) == (4, 0.5)
    r1 = next(r for r in rows(rep, "by_model") if r["model"] == "RoboCo R1")
    assert (r1["failures"], r1["warranty_claims"], r1["repair_hours"]) == (1, 1, 48.0)
    assert (r1["fw_updates"], r1["fw_failure_rate"]) == (0, None)  # a3's update was cancelled
    assert r1["failures_per_100"] == round(100 / (179 / DAYS_PER_MONTH), 2)
    batches = {r["order_number"]: r for r in rows(rep, "by_batch")}
    assert batches["PO-1"]["failures"] == 2 and batches["PO-1"]["devices"] == 2
    assert batches["(none)"]["device_months"] == 0.0 and batches["(none)"]["failures_per_100"] is None
    assert {r["supplier"] for r in rows(rep, "by_supplier")} == {"EduTech Supply", "RoboCo"}
    assert rep["summary"]["failures"] == 4 and rep["summary"]["warranty_claims"] == 2
    assert rep["summary"]["fw_failure_rate"] == 0.5


async def test_warranty_lists_expiring_and_faulty_out_of_warranty_devices(
    rapi: Api, district: Fixture
) -> None:
    rep = await get_report(rapi, "warranty", start="2026-01-01", end="2026-06-30")
    # a3's 12-month warranty from 1 Jul 2025 ends 1 Jul 2026: 1 day left, inside the 90-day horizon.
    assert [
        (r["asset_tag"], r["warranty_end"], r["days_left"], r["unit_price"]) for r in rows(rep, "expiring")
    ] == [("AT-a3", "2026-07-01", 1, 1000.0)]
    # a4: warranty ended 10 Jan 2025; in repair with an open critical alert. a1/a2 ended but are healthy.
    faulty = rows(rep, "out_with_faults")
    assert [(r["asset_tag"], r["faults"], r["replacement_cost"]) for r in faulty] == [
        ("AT-a4", "in repair; error_code", 300.0)
    ]
    assert rep["summary"]["replacement_cost"] == 300.0
    assert rep["summary"]["no_purchase_date"] == 1  # a5


async def test_utilisation_minutes_per_week_idle_devices_and_full_rooms(rapi: Api, district: Fixture) -> None:
    rep = await get_report(rapi, "utilisation", start="2026-06-01", end="2026-06-28")  # exactly 4 weeks
    per = {r["asset_tag"]: r for r in rows(rep, "by_device")}
    # Minutes inside 1..28 June: a1 60+60+40 = 160 (31 May and 29 June rows fall outside), a2 20, a3 10 x 60,
    # b1 50+50, a4 and a5 none. Per week = minutes / 4.
    assert {k: (v["active_minutes"], v["minutes_per_week"]) for k, v in per.items()} == {
        "AT-a1": (160, 40.0),
        "AT-a2": (20, 5.0),
        "AT-a3": (600, 150.0),
        "AT-a4": (0, 0.0),
        "AT-a5": (0, 0.0),
        "AT-b1": (100, 25.0),
    }
    # Idle is below 40 minutes a week: a1 at exactly 40 is not idle.
    assert sorted(r["asset_tag"] for r in rows(rep, "idle")) == ["AT-a2", "AT-a4", "AT-a5", "AT-b1"]
    assert rep["summary"]["active_minutes"] == 880
    assert rep["summary"]["minutes_per_device_week"] == round(880 / 6 / 4, 1) == 36.7
    assert rep["summary"]["idle_share"] == round(4 / 6, 4)
    room = {r["room"]: r for r in rows(rep, "by_room")}
    assert room["A-101"]["minutes_per_device_week"] == 22.5  # (160 + 20) / 2 devices / 4 weeks
    assert rows(rep, "over_capacity") == [
        {
            "school_code": "school-a",
            "room": "A-Lab",
            "room_kind": "digital_lab",
            "capacity": 1,
            "devices": 2,
            "excess": 1,
        }
    ]


async def test_budget_book_value_and_ai_share_against_the_target(rapi: Api, district: Fixture) -> None:
    rep = await get_report(rapi, "budget", start="2024-01-01", end="2025-12-31", budget="5000")
    # Straight line over 60 months, whole months to 31 Dec 2025:
    #   a1, a2: 300 x (60 - 21) / 60 = 195.00 each; a3: 1000 x 55/60 = 916.67; a4: 280 x 25/60 = 116.67;
    #   b2: 250 x 1/60 = 4.17 (in service until April 2026). b1 is leased; a5 did not exist yet.
    by_source = {r["funding_source"]: r for r in rows(rep, "book_by_source")}
    assert by_source["city"]["book_value"] == round(195.00 + 195.00 + 116.67, 2) == 506.67
    assert by_source["city"]["cost"] == 880.0
    assert by_source["state"]["book_value"] == round(916.67 + 4.17, 2) == 920.84
    assert rep["summary"]["book_value"] == 1427.51
    assert rep["summary"]["leased"] == 0  # b1, the leased one, arrived in 2026
    # Spend in 2024: a1 + a2 = 600 (terminals); 2025: a3 = 1000 (a robot in the AI lab). A budget of 5000 a
    # year over two years: AI share 1000 / 10000 = 10%, exactly the target.
    years = {r["year"]: r for r in rows(rep, "ai_share")}
    assert (years[2024]["spend"], years[2024]["ai_spend"], years[2024]["ai_share"]) == (600.0, 0.0, 0.0)
    assert (years[2025]["spend"], years[2025]["ai_spend"], years[2025]["ai_share"]) == (1000.0, 1000.0, 0.2)
    assert rep["summary"]["ai_share"] == 0.1 and rep["summary"]["ai_target_met"] is True
    # Without a budget the share is of the actual spend: 1000 / 1600.
    plain = await get_report(rapi, "budget", start="2024-01-01", end="2025-12-31")
    assert plain["summary"]["ai_share"] == 0.625
    # Replacements for 2026: b2's 5-year life (from 1 Jan 2021) ends 1 Jan 2026, at LT-100's price today.
    assert [(r["asset_tag"], r["reason"], r["unit_price"]) for r in rows(rep, "replacements")] == [
        ("AT-b2", "service life ends next year", 300.0)
    ]


async def test_budget_replaces_devices_that_failed_too_often(rapi: Api, district: Fixture) -> None:
    rep = await get_report(rapi, "budget", start="2026-01-01", end="2026-06-30")
    # a1 entered repair twice (replace_after_failures = 2 in these settings); b2 is retired now.
    assert [(r["asset_tag"], r["reason"]) for r in rows(rep, "replacements")] == [("AT-a1", "2 failures")]


async def test_inventory_by_status_ownership_and_age(rapi: Api, district: Fixture) -> None:
    rep = await get_report(rapi, "inventory", start="2026-01-01", end="2026-06-30")
    assert {r["status"]: r["devices"] for r in rows(rep, "by_status")} == {
        "provisioned": 1,
        "in_service": 4,
        "in_repair": 1,
        "retired": 1,
    }
    assert (rep["summary"]["devices"], rep["summary"]["owned"], rep["summary"]["leased"]) == (7, 6, 1)
    # Whole years to 30 Jun 2026: a3 0, b1 0 (leased), a1/a2 2, a4 3, b2 5, a5 unknown.
    assert {r["age"]: (r["devices"], r["leased"]) for r in rows(rep, "age")} == {
        "under 1 year": (2, 1),
        "1-2 years": (0, 0),
        "2-3 years": (2, 0),
        "3-5 years": (1, 0),
        "5 years or more": (1, 0),
        "unknown purchase date": (1, 0),
    }
    lt = next(r for r in rows(rep, "by_model") if r["model"] == "EduTech LT-100")
    assert (lt["devices"], lt["cost"]) == (6, 300 + 300 + 280 + 300 + 250)
