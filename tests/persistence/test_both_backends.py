"""The same API paths on SQLite and PostgreSQL: import, conflicts, transitions, time zones."""

from __future__ import annotations

from tests.conftest import Api
from tests.csvgen import delivery_csv
from tests.factories import build_world

V1 = "/api/v1"


async def test_import_conflict_and_lifecycle_on_each_backend(api_any: Api) -> None:
    api = api_any
    w = await build_world(api)
    h = await api.admin()
    r = await api.client.post(
        f"{V1}/imports/devices", files={"file": ("d.csv", delivery_csv(1000), "text/csv")}, headers=h
    )
    assert r.status_code == 201 and r.json()["created"] == 1000
    r = await api.client.post(
        f"{V1}/imports/devices", files={"file": ("d.csv", delivery_csv(5), "text/csv")}, headers=h
    )
    assert r.status_code == 422 and len(r.json()["details"]) == 10  # serial and asset tag, 5 rows each
    r = await api.client.post(
        f"{V1}/devices",
        json={"serial_number": "SN-a-1", "asset_tag": "new", "model_id": w.model, "school_id": w.school_a},
        headers=h,
    )
    assert r.status_code == 409 and "serial number" in r.json()["message"]
    r = await api.client.post(f"{V1}/devices/{w.device_a}/transitions", json={"to": "provisioned"}, headers=h)
    assert r.status_code == 200
    dev = (await api.client.get(f"{V1}/devices/{w.device_a}", headers=h)).json()
    assert dev["status"] == "provisioned" and dev["updated_at"].endswith(("Z", "+00:00"))
    long_name = {"name": "x" * 201}
    assert (await api.client.post(f"{V1}/districts", json=long_name, headers=h)).status_code == 422
    total = (await api.client.get(f"{V1}/devices", params={"limit": 1}, headers=h)).json()["total"]
    assert total == 1002
