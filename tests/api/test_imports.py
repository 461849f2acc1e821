"""Bulk import: all rows or none, every bad row reported with row and column, lossless export round trip."""

from __future__ import annotations

from fleet.services.imports import DEVICE_COLUMNS
from tests.conftest import Api
from tests.csvgen import delivery_csv
from tests.factories import build_world

V1 = "/api/v1"


async def _upload(api: Api, csv: str, path: str = f"{V1}/imports/devices", **params: str) -> tuple[int, dict]:
    r = await api.client.post(
        path, files={"file": ("delivery.csv", csv, "text/csv")}, params=params, headers=await api.admin()
    )
    return r.status_code, r.json()


async def _count(api: Api) -> int:
    r = await api.client.get(f"{V1}/devices", params={"limit": 1}, headers=await api.admin())
    return r.json()["total"]


async def test_10000_row_delivery_commits_every_row(api: Api) -> None:
    await build_world(api)
    status, body = await _upload(api, delivery_csv(10_000))
    assert status == 201, body
    assert body == {"kind": "devices", "created": 10_000, "dry_run": False}
    assert await _count(api) == 10_002
    r = await api.client.get(f"{V1}/devices", params={"school": 1, "limit": 500}, headers=await api.admin())
    assert r.json()["total"] == 10_001
    audit = await api.client.get(
        f"{V1}/audit", params={"action": "import.devices"}, headers=await api.admin()
    )
    assert audit.json()["items"][0]["after"]["created"] == 10_000


async def test_three_bad_rows_commit_nothing_and_are_all_reported(api: Api) -> None:
    await build_world(api)
    lines = delivery_csv(10_000).splitlines()
    header = lines[0].split(",")
    bad = {}
    # row numbers are file line numbers: the header is row 1, the first device row 2
    row = lines[101].split(",")
    row[header.index("purchase_date")] = "2026-13-45"
    lines[101] = ",".join(row)
    bad[102] = "purchase_date"
    row = lines[5000].split(",")
    row[header.index("model_number")] = "NO-SUCH-MODEL"
    lines[5000] = ",".join(row)
    bad[5001] = "model_number"
    row = lines[9999].split(",")
    row[header.index("asset_tag")] = lines[1].split(",")[header.index("asset_tag")]
    lines[9999] = ",".join(row)
    bad[10000] = "asset_tag"
    status, body = await _upload(api, "\n".join(lines) + "\n")
    assert status == 422
    assert body["error"] == "import_rejected"
    assert {(d["row"], d["column"]) for d in body["details"]} == set(bad.items())
    assert all(d["reason"] for d in body["details"])
    assert "3 of 10000 rows" in body["message"]
    assert await _count(api) == 2


async def test_dry_run_validates_without_writing(api: Api) -> None:
    await build_world(api)
    status, body = await _upload(api, delivery_csv(50), dry_run="true")
    assert (status, body["created"], body["dry_run"]) == (201, 50, True)
    assert await _count(api) == 2


async def test_header_errors_name_the_columns(api: Api) -> None:
    await build_world(api)
    status, body = await _upload(api, "serial_number,asset_tag,colour\nA,B,red\n")
    assert status == 422
    cols = {(d["row"], d["column"], d["reason"].split(";")[0]) for d in body["details"]}
    assert (1, "vendor", "required column missing") in cols
    assert (1, "colour", "unknown column") in cols


async def test_garbage_upload_is_a_clear_422(api: Api) -> None:
    await build_world(api)
    for payload in (b"\xff\xfe\x00\x01binary", b"", b"serial_number\n"):
        r = await api.client.post(
            f"{V1}/imports/devices", files={"file": ("x.csv", payload, "text/csv")}, headers=await api.admin()
        )
        assert r.status_code == 422, (payload, r.text)
        assert r.json()["message"]


async def test_export_then_import_is_lossless(api: Api) -> None:
    await build_world(api)
    status, _ = await _upload(api, delivery_csv(300))
    assert status == 201
    exported = (await api.client.get(f"{V1}/exports/devices", headers=await api.admin())).text
    assert exported.splitlines()[0] == ",".join(DEVICE_COLUMNS)
    # Re-import into the same district under new identities: the same columns and values parse back exactly.
    renamed = exported.replace("DLV-", "RT-").replace("SN-", "RT-SN-").replace("AT-", "RT-AT-")
    status, body = await _upload(api, renamed)
    assert status == 201, body
    again = (await api.client.get(f"{V1}/exports/devices", headers=await api.admin())).text
    first_half, second_half = again.splitlines()[1:303], again.splitlines()[303:]
    assert [
        r.replace("DLV-", "RT-").replace("SN-", "RT-SN-").replace("AT-", "RT-AT-") for r in first_half
    ] == second_half


async def test_rooms_import_reports_every_bad_row(api: Api) -> None:
    await build_world(api)
    csv = (
        "school_code,name,kind,tier,capacity\n"
        "school-a,Lab 7,ai_lab,advanced_research,12\n"
        "school-a,Lab 8,ai_lab,,12\n"
        "nowhere,Lab 9,digital_lab,,10\n"
        "school-a,Lab 10,gym,,x\n"
    )
    status, body = await _upload(api, csv, f"{V1}/imports/rooms")
    assert status == 422
    assert {(d["row"], d["column"]) for d in body["details"]} == {
        (3, "tier"),
        (4, "school_code"),
        (5, "kind"),
        (5, "capacity"),
    }
    status, body = await _upload(
        api, csv.splitlines()[0] + "\n" + csv.splitlines()[1] + "\n", f"{V1}/imports/rooms"
    )
    assert (status, body["created"]) == (201, 1)
