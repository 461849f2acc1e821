"""Bad input gets a 4xx with a readable reason, never a 500: explicit cases plus hypothesis fuzzing."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Api
from tests.factories import build_world

V1 = "/api/v1"


async def test_malformed_json_is_422_with_reason(api: Api) -> None:
    w = await build_world(api)
    headers = {**await api.admin(), "Content-Type": "application/json"}
    for raw in (b"{", b"{'a': 1}", b"[1,2", b"\xff\xfe", b"null", b"123", b'"text"'):
        r = await api.client.post(f"{V1}/rooms", content=raw, headers=headers)
        assert r.status_code == 422, (raw, r.status_code, r.text)
        assert r.json()["message"]
    r = await api.client.patch(f"{V1}/devices/{w.device_a}", content=b"{not json}", headers=headers)
    assert r.status_code == 422


async def test_wrong_types_and_unknown_fields_are_named(api: Api) -> None:
    w = await build_world(api)
    h = await api.admin()
    r = await api.client.post(
        f"{V1}/rooms", json={"school_id": "one", "name": "X", "kind": "smart_classroom"}, headers=h
    )
    assert r.status_code == 422 and "school_id" in r.json()["message"]
    r = await api.client.post(
        f"{V1}/rooms",
        json={"school_id": w.school_a, "name": "X", "kind": "smart_classroom", "colour": "red"},
        headers=h,
    )
    assert r.status_code == 422 and "colour" in r.json()["message"]
    r = await api.client.patch(f"{V1}/devices/{w.device_a}", json={"status": "retired"}, headers=h)
    assert r.status_code == 422 and "status" in r.json()["message"], "status changes only through transitions"
    r = await api.client.post(
        f"{V1}/schools", json={"district_id": 2**40, "code": "x", "name": "y", "uplink_mbps": 1}, headers=h
    )
    assert r.status_code == 422
    r = await api.client.get(f"{V1}/devices/{2**40}", headers=h)
    assert r.status_code == 422
    r = await api.client.post(
        f"{V1}/schools",
        json={"district_id": w.district, "code": "nul\x00", "name": "y", "uplink_mbps": 1},
        headers=h,
    )
    assert r.status_code == 422
    r = await api.client.patch(f"{V1}/rooms/{w.room_a}", json={"name": None}, headers=h)
    assert r.status_code == 422 and "name" in r.json()["message"]
    r = await api.client.post(
        f"{V1}/schools",
        json={
            "district_id": w.district,
            "code": "tz",
            "name": "y",
            "uplink_mbps": 1,
            "timezone": "Mars/Olympus",
        },
        headers=h,
    )
    assert r.status_code == 422 and "time zone" in r.json()["message"]


async def test_oversized_body_is_413(api: Api) -> None:
    await build_world(api)
    h = {**await api.admin(), "Content-Type": "application/json"}
    big = json.dumps({"name": "x" * (1024 * 1024 + 10)}).encode()
    r = await api.client.post(f"{V1}/districts", content=big, headers=h)
    assert r.status_code == 413
    assert "larger than" in r.json()["message"]

    async def chunks():  # no Content-Length: the stream itself is counted
        for _ in range(20):
            yield b" " * 65536
        yield b"{}"

    r = await api.client.post(f"{V1}/districts", content=chunks(), headers=h)
    assert r.status_code == 413


async def test_illegal_lifecycle_transitions_are_409_with_allowed_list(api: Api) -> None:
    w = await build_world(api)
    h = await api.admin()
    r = await api.client.post(f"{V1}/devices/{w.device_a}/transitions", json={"to": "in_repair"}, headers=h)
    assert r.status_code == 409
    body = r.json()
    assert body["error"] == "illegal_transition" and "received" in body["message"]
    assert set(body["details"]["allowed"]) == {"provisioned", "retired", "lost"}
    for step in ("provisioned", "in_service", "in_repair", "in_service", "retired"):
        r = await api.client.post(f"{V1}/devices/{w.device_a}/transitions", json={"to": step}, headers=h)
        assert r.status_code == 200, (step, r.text)
    r = await api.client.post(f"{V1}/devices/{w.device_a}/transitions", json={"to": "in_service"}, headers=h)
    assert r.status_code == 409 and "terminal state" in r.json()["message"]
    hist = (await api.client.get(f"{V1}/devices/{w.device_a}/history", headers=h)).json()
    assert [(t["from_status"], t["to_status"]) for t in hist["items"]] == [
        (None, "received"),
        ("received", "provisioned"),
        ("provisioned", "in_service"),
        ("in_service", "in_repair"),
        ("in_repair", "in_service"),
        ("in_service", "retired"),
    ]
    assert all(t["actor"].startswith("token:") and t["at"] for t in hist["items"][1:])


async def test_bad_cursor_and_limit_are_422(api: Api) -> None:
    await build_world(api)
    h = await api.admin()
    assert (await api.client.get(f"{V1}/devices", params={"cursor": "!!!"}, headers=h)).status_code == 422
    assert (await api.client.get(f"{V1}/devices", params={"limit": 501}, headers=h)).status_code == 422
    assert (await api.client.get(f"{V1}/devices", params={"limit": 0}, headers=h)).status_code == 422


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "school_id",
    "district_id",
    "model_id",
    "room_id",
    "name",
    "code",
    "kind",
    "tier",
    "capacity",
    "vendor",
    "model_number",
    "serial_number",
    "asset_tag",
    "status",
    "unit_price",
    "unit_cost",
    "warranty_months",
    "uplink_mbps",
    "timezone",
    "weekday",
    "start_time",
    "end_time",
    "start_date",
    "end_date",
    "purchase_date",
    "role",
    "school_ids",
    "district_wide",
    "to",
    "reason",
    "transport",
    "supplier",
    "ownership",
]
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8) | json_values
WRITE_ROUTES = [
    ("POST", "/districts"),
    ("POST", "/schools"),
    ("POST", "/rooms"),
    ("POST", "/device-models"),
    ("POST", "/devices"),
    ("POST", "/bell-periods"),
    ("POST", "/calendar-entries"),
    ("POST", "/tokens"),
    ("PATCH", "/schools/1"),
    ("PATCH", "/rooms/1"),
    ("PATCH", "/devices/1"),
    ("PATCH", "/device-models/1"),
    ("PATCH", "/bell-periods/1"),
    ("PATCH", "/calendar-entries/1"),
    ("POST", "/devices/1/transitions"),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(WRITE_ROUTES), body=bodies)
async def test_fuzzed_bodies_never_get_a_500(api: Api, route: tuple[str, str], body: object) -> None:
    if not hasattr(api, "_world"):
        api._world = await build_world(api)
    r = await api.client.request(route[0], V1 + route[1], json=body, headers=await api.admin())
    assert r.status_code < 500, (route, body, r.text)
    if r.status_code >= 400:
        assert r.json()["message"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(st.text(max_size=30), min_size=0, max_size=14), max_size=6))
async def test_fuzzed_csv_rows_never_get_a_500(api: Api, rows: list[list[str]]) -> None:
    import csv
    import io

    if not hasattr(api, "_world"):
        api._world = await build_world(api)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "serial_number",
            "asset_tag",
            "vendor",
            "model_number",
            "school_code",
            "room",
            "status",
            "order_number",
            "purchase_date",
            "unit_cost",
            "funding_source",
            "ownership",
        ]
    )
    writer.writerows(rows)
    r = await api.client.post(
        f"{V1}/imports/devices",
        files={"file": ("f.csv", out.getvalue(), "text/csv")},
        headers=await api.admin(),
    )
    assert r.status_code < 500, (rows, r.text)


async def test_a_locked_database_answers_503_with_retry_after(api: Api, sqlite_url: str) -> None:
    """A writer holding SQLite's lock past the busy timeout is a retryable 503, never a 500."""
    import sqlite3

    from fleet.persistence import db

    await build_world(api)
    path = sqlite_url.split(":///", 1)[1]
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN IMMEDIATE")  # take the write lock and keep it
    old = db.SQLITE_BUSY_TIMEOUT_MS
    try:
        db.SQLITE_BUSY_TIMEOUT_MS = 50  # read by the connect hook: new connections wait only 50 ms
        await api.sessions.kw["bind"].dispose()
        r = await api.client.post(f"{V1}/districts", json={"name": "Blocked"}, headers=await api.admin())
    finally:
        db.SQLITE_BUSY_TIMEOUT_MS = old
        blocker.rollback()
        blocker.close()
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "1" and "retry" in r.json()["message"]
