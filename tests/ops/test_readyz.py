"""/readyz covers the database, the service's broker links and ingest lag: the rules on plain values, and a
running service with its device plane (embedded broker) reporting both links up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from fleet.app import create_app
from fleet.domain.clock import FakeClock
from fleet.runtime.brokers import free_port
from fleet.runtime_hooks import default_hooks
from fleet.services.health import plane_readiness
from tests.conftest import make_settings


def test_the_readiness_rules() -> None:
    assert plane_readiness(None, None, 30) == ({}, [])
    up = {"commands": True, "ingest": True}
    assert plane_readiness(up, 0.2, 30) == (
        {"broker": {"commands": "ok", "ingest": "ok"}, "ingest_lag_s": 0.2},
        [],
    )
    assert plane_readiness({"commands": True, "ingest": False}, 0.0, 30)[1] == ["broker_ingest_down"]
    assert plane_readiness(up, 30.5, 30)[1] == ["ingest_lag"]
    assert plane_readiness(up, 30.0, 30)[1] == []
    assert plane_readiness({"commands": False}, None, 30) == (
        {"broker": {"commands": "down"}, "ingest": "in_workers"},
        ["broker_commands_down"],
    )


async def test_a_running_service_reports_its_broker_links_and_ingest_lag(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        sqlite_url, mqtt={"broker": "embedded", "listen_port": free_port(), "data_dir": str(tmp_path / "mq")}
    )
    settings.reports.monthly_enabled = False
    app = create_app(settings, clock=FakeClock(), migrate=False, runtime_hooks=default_hooks(settings))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        body: dict[str, object] = {}
        for _ in range(100):  # the command publisher connects just after start
            r = await c.get("/readyz")
            body = r.json()
            if r.status_code == 200:
                break
            assert body["problems"] == ["broker_commands_down"]
            await asyncio.sleep(0.1)
        assert body["broker"] == {"commands": "ok", "ingest": "ok"}
        assert body["ingest_lag_s"] == 0.0 and body["status"] == "ok"
