"""Every input the outside probe answered with a 500 now gets a 4xx in the JSON error shape (issue 16, point
2); anything else unexpected is a JSON 500 with an incident id that is also in the log."""

from __future__ import annotations

import base64
import logging

import httpx
import pytest

from fleet.app import create_app
from tests.conftest import Api, make_settings
from tests.factories import build_world

V1 = "/api/v1"
FAR_FUTURE = "9999-12-31T23:59:59-12:00"  # year 10000 in UTC
FAR_PAST = "0001-01-01T00:00:00+14:00"  # year 0 in UTC


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def assert_4xx_json(r: httpx.Response, status: int = 422) -> dict:
    assert r.status_code == status, (r.request.url, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "message", "details"} and body["message"], body
    return body


async def test_cursors_not_issued_are_422_and_past_the_key_range_an_empty_page(api_any: Api) -> None:
    """A cursor is the last key in decimal (the pattern the OpenAPI document states); anything else is a 422
    naming the cursor, and a key past a column's range (PostgreSQL refuses an int4 parameter past 2^31 - 1)
    is the end of the list, not an error: both backends."""
    api = api_any
    w = await build_world(api)
    h = await api.admin()
    routes = [
        "/devices",
        "/rooms",
        "/audit",
        "/tokens",
        "/rollouts",
        "/artifacts",
        f"/devices/{w.device_a}/history",
        "/schools",
        "/bell-periods",
    ]
    for raw in ("9223372036854775808", "1" * 19, "+1", "1_0", " 1", "01", _cursor("id:1"), "-1"):
        for route in routes:
            r = await api.client.get(f"{V1}{route}", params={"cursor": raw}, headers=h)
            body = assert_4xx_json(r)
            assert "cursor" in body["message"], (route, raw, body)
    for raw in ("2147483647", "2147483648", "9" * 18):
        for route in routes:
            r = await api.client.get(f"{V1}{route}", params={"cursor": raw}, headers=h)
            assert r.status_code == 200 and r.json()["items"] == [], (route, raw, r.text)


@pytest.mark.parametrize("at", [FAR_FUTURE, FAR_PAST, "2026-09-07T08:00:00", "2200-01-01T00:00:00Z"])
async def test_lesson_query_outside_the_time_range_is_422(api: Api, at: str) -> None:
    w = await build_world(api)
    r = await api.client.get(f"{V1}/rooms/{w.room_a}/lesson", params={"at": at}, headers=await api.admin())
    body = assert_4xx_json(r)
    assert "at" in body["message"]


async def test_lesson_query_inside_the_range_still_answers(api: Api) -> None:
    w = await build_world(api)
    r = await api.client.get(
        f"{V1}/rooms/{w.room_a}/lesson", params={"at": "2026-09-07T08:10:00Z"}, headers=await api.admin()
    )
    assert r.status_code == 200, r.text
    assert r.json()["in_lesson"] is True and r.json()["at"].endswith("+00:00")


@pytest.mark.parametrize(
    "params",
    [{"since": FAR_FUTURE}, {"until": FAR_PAST}, {"since": "2026-01-01T00:00:00"}, {"until": FAR_FUTURE}],
)
async def test_audit_filters_outside_the_time_range_are_422(api: Api, params: dict[str, str]) -> None:
    await build_world(api)
    r = await api.client.get(f"{V1}/audit", params=params, headers=await api.admin())
    body = assert_4xx_json(r)
    assert next(iter(params)) in body["message"]


@pytest.mark.parametrize("expires_at", [FAR_FUTURE, FAR_PAST, "2027-01-01T00:00:00"])
async def test_token_expiry_outside_the_time_range_is_422(api: Api, expires_at: str) -> None:
    await build_world(api)
    r = await api.client.post(
        f"{V1}/tokens",
        json={"name": "far", "role": "auditor", "district_wide": True, "expires_at": expires_at},
        headers=await api.admin(),
    )
    body = assert_4xx_json(r)
    assert "expires_at" in body["message"]


async def test_bell_times_with_an_offset_are_422(api: Api) -> None:
    w = await build_world(api)
    h = await api.admin()
    r = await api.client.patch(f"{V1}/bell-periods/{w.period_a}", json={"start_time": "07:59:00Z"}, headers=h)
    body = assert_4xx_json(r)
    assert "start_time" in body["message"] and "offset" in body["message"]
    r = await api.client.post(
        f"{V1}/bell-periods",
        json={
            "school_id": w.school_a,
            "weekday": 1,
            "name": "P2",
            "start_time": "09:00:00+08:00",
            "end_time": "09:40:00",
        },
        headers=h,
    )
    assert_4xx_json(r)
    r = await api.client.patch(f"{V1}/bell-periods/{w.period_a}", json={"start_time": "07:59:00"}, headers=h)
    assert r.status_code == 200 and r.json()["start_time"] == "07:59:00"


async def test_a_csv_field_over_the_csv_modules_limit_is_a_rejected_import(api: Api) -> None:
    await build_world(api)
    body = "serial_number,asset_tag,vendor,model_number,school_code\n" + (
        f"SN-1,{'x' * (129 * 1024)},EduTech,LT-100,school-a\n"
    )
    r = await api.client.post(
        f"{V1}/imports/devices",
        files={"file": ("big.csv", body.encode(), "text/csv")},
        headers=await api.admin(),
    )
    out = assert_4xx_json(r)
    assert out["error"] == "import_rejected" and "line" in out["message"]


@pytest.mark.parametrize("when", ["9999-12-31", "1989-12-31", "2027-09-08"])
async def test_purchase_dates_outside_the_range_are_refused_everywhere(api: Api, when: str) -> None:
    # The clock is 2026-09-07: a year ahead is 2027-09-07 at the latest; the day after is refused.
    w = await build_world(api)
    h = await api.admin()
    r = await api.client.patch(f"{V1}/devices/{w.device_a}", json={"purchase_date": when}, headers=h)
    body = assert_4xx_json(r)
    assert "purchase_date" in body["message"]
    r = await api.client.post(
        f"{V1}/devices",
        json={
            "serial_number": "SN-new",
            "asset_tag": "AT-new",
            "model_id": w.model,
            "school_id": w.school_a,
            "purchase_date": when,
        },
        headers=h,
    )
    assert_4xx_json(r)
    csv_text = (
        "serial_number,asset_tag,vendor,model_number,school_code,purchase_date\n"
        f"SN-imp,AT-imp,EduTech,LT-100,school-a,{when}\n"
    )
    r = await api.client.post(
        f"{V1}/imports/devices", files={"file": ("d.csv", csv_text.encode(), "text/csv")}, headers=h
    )
    out = assert_4xx_json(r)
    assert out["details"][0]["column"] == "purchase_date", out


async def test_purchase_dates_at_the_edges_are_accepted(api: Api) -> None:
    w = await build_world(api)
    h = await api.admin()
    for when in ("1990-01-01", "2027-09-07"):
        r = await api.client.patch(f"{V1}/devices/{w.device_a}", json={"purchase_date": when}, headers=h)
        assert r.status_code == 200, r.text


async def test_booleans_are_not_numbers_and_numbers_not_booleans(api: Api) -> None:
    w = await build_world(api)
    h = await api.admin()
    r = await api.client.patch(f"{V1}/schools/{w.school_a}", json={"uplink_mbps": True}, headers=h)
    assert "uplink_mbps" in assert_4xx_json(r)["message"]
    r = await api.client.post(
        f"{V1}/tokens", json={"name": "n", "role": "auditor", "district_wide": 1}, headers=h
    )
    assert "district_wide" in assert_4xx_json(r)["message"]
    r = await api.client.post(
        f"{V1}/tokens", json={"name": "n", "role": "auditor", "school_ids": [True]}, headers=h
    )
    assert_4xx_json(r)
    school = (await api.client.get(f"{V1}/schools/{w.school_a}", headers=h)).json()
    assert school["uplink_mbps"] == 100


async def test_an_unexpected_error_is_a_json_500_with_an_incident_id_in_the_log(
    sqlite_url: str, clock, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(sqlite_url), clock=clock, migrate=False)

    async def broken() -> None:
        raise RuntimeError("secret-looking internals")

    app.add_api_route("/api/v1/broken", broken, methods=["GET"])
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        with caplog.at_level(logging.ERROR, logger="fleet.api.errors"):
            r = await client.get("/api/v1/broken", params={"sig": "s3cr3t"})
    body = assert_4xx_json(r, 500)
    incident = body["details"]["incident"]
    assert body["error"] == "internal_error" and incident in body["message"]
    assert r.headers["x-incident-id"] == incident
    assert "secret-looking" not in r.text and "Traceback" not in r.text
    records = [rec for rec in caplog.records if incident in rec.getMessage()]
    assert records and records[0].exc_info is not None, "the traceback goes to the log"
    assert "s3cr3t" not in records[0].getMessage()


async def test_numbers_are_not_times(api: Api) -> None:
    """pydantic would read 0 or "0.5" as a Unix timestamp; the contract says ISO 8601 (schemathesis ST201)."""
    w = await build_world(api)
    h = await api.admin()
    r = await api.client.get(f"{V1}/rooms/{w.room_a}/lesson", params={"at": "0.5"}, headers=h)
    assert_4xx_json(r)
    r = await api.client.post(
        f"{V1}/tokens",
        json={"name": "n", "role": "auditor", "district_wide": True, "expires_at": 0},
        headers=h,
    )
    assert "expires_at" in assert_4xx_json(r)["message"]
    r = await api.client.post(
        f"{V1}/calendar-entries",
        json={"school_id": w.school_a, "kind": "term", "start_date": 0, "end_date": "2027-01-01"},
        headers=h,
    )
    assert "start_date" in assert_4xx_json(r)["message"]
