"""Route-template latency middleware and the /metrics route, in process through ASGITransport."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from prometheus_client import CollectorRegistry

from fleet.observability.exposition import MetricsAccess
from fleet.observability.http import HttpMetricsMiddleware, metrics_router
from fleet.observability.metrics import FleetMetrics


class StepTimer:
    """Each call advances 0.125 s, so every request (two calls) takes exactly 0.125 s."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.125
        return self.t


def _app(access: MetricsAccess | None = None) -> tuple[FastAPI, CollectorRegistry]:
    access = access or MetricsAccess()
    registry = CollectorRegistry()
    fm = FleetMetrics(registry)
    app = FastAPI()

    @app.get("/api/v1/devices/{device_id}")
    async def get_device(device_id: int) -> dict[str, int]:
        if device_id == 404:
            raise HTTPException(404)
        return {"id": device_id}

    @app.get("/api/v1/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    app.add_middleware(HttpMetricsMiddleware, metrics=fm, timer=StepTimer())
    app.include_router(metrics_router(registry, access))
    return app, registry


def _client(app: FastAPI, host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(host, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://labfleet")


async def test_latency_is_labelled_by_route_template_not_the_raw_path() -> None:
    app, registry = _app()
    async with _client(app) as client:
        for device_id in (1, 2, 3, 404):
            await client.get(f"/api/v1/devices/{device_id}")
    route = {"route": "GET /api/v1/devices/{device_id}"}
    assert registry.get_sample_value("labfleet_http_request_duration_seconds_count", route) == 4
    assert registry.get_sample_value("labfleet_http_request_duration_seconds_sum", route) == pytest.approx(
        0.5
    )
    assert registry.get_sample_value("labfleet_http_requests_total", {**route, "status_class": "2xx"}) == 3
    assert registry.get_sample_value("labfleet_http_requests_total", {**route, "status_class": "4xx"}) == 1
    text = (await _scrape(app)).text
    assert "/api/v1/devices/1" not in text and "/api/v1/devices/404" not in text


async def test_unmatched_paths_share_one_label_and_exceptions_count_as_5xx() -> None:
    app, registry = _app()
    async with _client(app) as client:
        for i in range(5):
            assert (await client.get(f"/wp-admin/{i}.php")).status_code == 404
        assert (await client.get("/api/v1/boom")).status_code == 500
    assert (
        registry.get_sample_value(
            "labfleet_http_requests_total", {"route": "unmatched", "status_class": "4xx"}
        )
        == 5
    )
    assert (
        registry.get_sample_value(
            "labfleet_http_requests_total", {"route": "GET /api/v1/boom", "status_class": "5xx"}
        )
        == 1
    )


async def _scrape(app: FastAPI, host: str = "127.0.0.1", **headers: str) -> httpx.Response:
    async with _client(app, host) as client:
        return await client.get("/metrics", headers=headers)


async def test_metrics_from_loopback_need_no_token_and_are_not_timed_themselves() -> None:
    app, registry = _app()
    resp = await _scrape(app)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE labfleet_enrollments_total counter" in resp.text
    assert (
        registry.get_sample_value("labfleet_http_request_duration_seconds_count", {"route": "GET /metrics"})
        is None
    )


async def test_metrics_from_elsewhere_need_the_token() -> None:
    app, _ = _app(MetricsAccess(token="s3cret"))
    refused = await _scrape(app, "10.9.8.7")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "labfleet_" not in refused.text
    assert (await _scrape(app, "10.9.8.7", authorization="Bearer wrong")).status_code == 401
    assert (await _scrape(app, "10.9.8.7", authorization="Bearer s3cret")).status_code == 200


def test_worker_metrics_thread_keeps_the_access_rule_and_reports_a_taken_port() -> None:
    import urllib.error
    import urllib.request

    from fleet.observability.http import serve_metrics_thread

    registry = CollectorRegistry()
    FleetMetrics(registry).ingest_message("ok", 3)
    # Loopback is not among the allowed networks here, so even a local scrape needs the token.
    access = MetricsAccess.from_settings(["10.0.0.0/8"], "s3cret")
    httpd = serve_metrics_thread(registry, access, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{httpd.server_port}/metrics"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401
        req = urllib.request.Request(url, headers={"Authorization": "Bearer s3cret"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert 'labfleet_ingest_messages_total{result="ok"} 3.0' in r.read().decode()
        with pytest.raises(
            OSError
        ):  # the port is taken (by the first server): the caller decides what that costs
            serve_metrics_thread(registry, access, "127.0.0.1", httpd.server_port)
    finally:
        httpd.shutdown()
        httpd.server_close()
