"""/metrics is served by the app: open to loopback, token-guarded elsewhere, with HTTP latency per route
template."""

from __future__ import annotations

import httpx

from fleet.app import create_app
from tests.conftest import Api, make_settings
from tests.factories import build_world


async def test_metrics_counts_requests_by_route_template_not_raw_path(api: Api) -> None:
    w = await build_world(api)
    h = await api.admin()
    for dev in (w.device_a, w.device_b):
        assert (await api.client.get(f"/api/v1/devices/{dev}", headers=h)).status_code == 200
    r = await api.client.get("/metrics")  # the in-process client is 127.0.0.1: loopback may scrape
    assert r.status_code == 200
    text = r.text
    assert 'route="GET /api/v1/devices/{obj_id}"' in text
    assert f"/api/v1/devices/{w.device_a}" not in text
    assert "labfleet_" in text


async def test_metrics_from_another_network_needs_the_token(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url)
    settings.metrics.allowed_networks = ["10.9.9.0/24"]
    settings.metrics.token = "scrape-secret"
    app = create_app(settings, migrate=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/metrics")).status_code == 401
            assert (
                await client.get("/metrics", headers={"Authorization": "Bearer wrong"})
            ).status_code == 401
            r = await client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
            assert r.status_code == 200 and "labfleet_" in r.text
