"""The monthly job: last month's standard set per district, written whole, keeping the last N months."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from fleet.app import create_app
from fleet.domain.clock import FakeClock
from fleet.runtime.report_job import MonthlyReports, monthly_reports_hook, previous_month
from fleet.runtime_hooks import default_hooks
from tests.conftest import make_settings
from tests.reports.conftest import REPORT_SETTINGS
from tests.reports.district import build_district


def months(folder: Path, district: int) -> list[str]:
    return sorted(p.name for p in (folder / f"district-{district}").iterdir())


async def test_monthly_job_writes_last_month_and_keeps_the_last_n(sqlite_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "reports"
    cfg = REPORT_SETTINGS.model_copy(
        update={
            "folder": str(folder),
            "keep_last": 2,
            "monthly_reports": ["coverage", "budget"],
            "monthly_formats": ["json", "xlsx"],
        }
    )
    clock = FakeClock(datetime(2026, 3, 2, 3, 0, tzinfo=UTC))
    app = create_app(
        make_settings(sqlite_url, reports=cfg),
        clock=clock,
        migrate=False,
        runtime_hooks=[monthly_reports_hook()],
    )
    async with app.router.lifespan_context(app):
        state = app.state.fleet
        fx = await build_district(state.sessions)
        job: MonthlyReports = state.monthly_reports
        assert state.monthly_reports_task.get_name() == "monthly-reports"
        await job.tick()
        assert months(folder, fx.district) == ["2026-02"]
        feb = folder / f"district-{fx.district}" / "2026-02"
        assert sorted(p.name for p in feb.iterdir()) == [
            "budget.json",
            "budget.xlsx",
            "coverage.json",
            "coverage.xlsx",
        ]
        body = json.loads((feb / "coverage.json").read_text())
        assert body["range"] == {"start": "2026-02-01", "end": "2026-02-28"}
        assert body["filters"] == {"district": f"Fixture District (id {fx.district})"}
        assert await job.tick() == []  # already there: nothing to do until the month turns
        for month in (4, 5, 6):
            clock.set(datetime(2026, month, 1, 0, 30, tzinfo=UTC))
            await job.tick()
        assert months(folder, fx.district) == ["2026-04", "2026-05"]  # March..May written, the last 2 kept
        task = state.monthly_reports_task
    assert task.done()  # the lifespan stopped the job


def test_previous_month_handles_january_and_month_ends() -> None:
    assert [str(d) for d in previous_month(datetime(2027, 1, 15).date())] == ["2026-12-01", "2026-12-31"]
    assert [str(d) for d in previous_month(datetime(2028, 3, 1).date())] == ["2028-02-01", "2028-02-29"]


def test_serve_starts_the_monthly_job_unless_disabled(sqlite_url: str) -> None:
    def monthly(hooks: list[object]) -> int:
        return sum(1 for h in hooks if getattr(h, "__qualname__", "").startswith("monthly_reports_hook."))

    assert monthly(default_hooks(make_settings(sqlite_url))) == 1
    off = make_settings(sqlite_url, reports=REPORT_SETTINGS.model_copy(update={"monthly_enabled": False}))
    assert monthly(default_hooks(off)) == 0
