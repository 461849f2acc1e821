"""The reports API over the fixture district, on SQLite and PostgreSQL, with the plan settings the tests
use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fleet.app import create_app
from fleet.domain.clock import FakeClock
from fleet.settings import PlanTargets, ReportSettings
from tests.conftest import Api, make_settings
from tests.reports.district import Fixture, build_district

REPORT_SETTINGS = ReportSettings(
    targets=PlanTargets(smart_classrooms=2, digital_labs=1, terminals=10),
    service_life_years=5,
    ai_budget_target_share=0.10,
    idle_minutes_per_week=40,
    warranty_horizon_days=90,
    replace_after_failures=2,
)


@pytest.fixture
async def rapi(any_db_url: str, clock: FakeClock, tmp_path: Any) -> AsyncIterator[Api]:
    settings = make_settings(
        any_db_url, reports=REPORT_SETTINGS.model_copy(update={"folder": str(tmp_path / "r")})
    )
    app = create_app(settings, clock=clock, migrate=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client=client, sessions=app.state.fleet.sessions, clock=clock)


@pytest.fixture
async def district(rapi: Api) -> Fixture:
    return await build_district(rapi.sessions)


async def get_report(
    api: Api, name: str, *, role: str = "admin", schools: tuple[int, ...] | None = None, **params: Any
) -> dict[str, Any]:
    r = await api.client.get(
        f"/api/v1/reports/{name}", params={"format": "json", **params}, headers=await api.as_(role, schools)
    )
    assert r.status_code == 200, r.text
    return r.json()


def rows(report: dict[str, Any], section: str) -> list[dict[str, Any]]:
    return next(s["rows"] for s in report["sections"] if s["key"] == section)
