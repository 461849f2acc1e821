from __future__ import annotations

from tests.conftest import Api
from tests.factories import build_world


async def test_world_builds_and_lists_devices_with_total(api: Api) -> None:
    w = await build_world(api)
    r = await api.client.get("/api/v1/devices", headers=await api.admin())
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 2
    assert {d["id"] for d in body["items"]} == {w.device_a, w.device_b}
