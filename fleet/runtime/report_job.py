"""The monthly job: each district's standard report set for the last calendar month, written into the reports
folder (one directory per district and month), keeping the last N months."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import threading
from contextlib import AsyncExitStack
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.domain.clock import Clock
from fleet.domain.enums import Role
from fleet.domain.permissions import Principal
from fleet.errors import FeatureUnavailable
from fleet.persistence.db import create_engine, session_factory, unit_of_work
from fleet.persistence.models import District
from fleet.runtime.state import Stage, stage
from fleet.runtime.supervise import Retry, cancel_and_wait, every
from fleet.services.reports import ReportQuery, generate, render
from fleet.settings import Settings

if TYPE_CHECKING:
    from fleet.runtime.state import FleetState, RuntimeHook

log = logging.getLogger(__name__)

JOB = Principal(name="monthly-reports", role=Role.ADMIN, district_wide=True, school_ids=frozenset())


def previous_month(today: date) -> tuple[date, date]:
    """First and last day of the calendar month before `today`'s."""
    last = today.replace(day=1) - timedelta(days=1)
    return last.replace(day=1), last


class MonthlyReports:
    """Writes <folder>/district-<id>/<YYYY-MM>/<report>.<format> and prunes all but the newest keep_last
    months.

    Each run happens in a worker thread with its own event loop and database engine: building a district's
    reports is seconds of Python work, which must not stall the service's loop (API requests, MQTT ingest).
    """

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.cfg = settings.reports
        self.clock = clock
        self.folder = Path(self.cfg.folder)
        # One run at a time: the background loop and `labfleet report monthly` or a test may overlap.
        self._lock = threading.Lock()

    def month_dir(self, district_id: int, first: date) -> Path:
        return self.folder / f"district-{district_id}" / first.strftime("%Y-%m")

    async def tick(self) -> list[Path]:
        """Write last month's set for every district that lacks it; a no-op when all are there."""
        return await asyncio.to_thread(self._in_thread, None, False)

    async def run(self, month: date | None = None) -> list[Path]:
        """Write (or rewrite) one month's set for every district; default last month."""
        return await asyncio.to_thread(self._in_thread, month, True)

    def _in_thread(self, month: date | None, force: bool) -> list[Path]:
        with self._lock:
            return asyncio.run(self._work(month, force))

    async def _work(self, month: date | None, force: bool) -> list[Path]:
        first = month.replace(day=1) if month else previous_month(self.clock.now().date())[0]
        engine = create_engine(self.settings.database_url)
        try:
            sessions = session_factory(engine)
            async with sessions() as session:
                districts = list((await session.execute(select(District.id).order_by(District.id))).scalars())
            written: list[Path] = []
            for district_id in districts:
                if force or not self.month_dir(district_id, first).is_dir():
                    written += await self._write(sessions, district_id, first)
            return written
        finally:
            await engine.dispose()

    async def _write(
        self, sessions: async_sessionmaker[AsyncSession], district_id: int, first: date
    ) -> list[Path]:
        last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        target = self.month_dir(district_id, first)
        partial = target.with_name(target.name + ".partial")
        await asyncio.to_thread(shutil.rmtree, partial, True)
        await asyncio.to_thread(partial.mkdir, parents=True, exist_ok=True)
        names: list[str] = []
        query = ReportQuery(district=district_id, start=first, end=last)
        for name in self.cfg.monthly_reports:
            async with unit_of_work(sessions) as session:
                report = await generate(session, JOB, name, query, settings=self.cfg, now=self.clock.now())
            for fmt in self.cfg.monthly_formats:
                try:
                    body = await asyncio.to_thread(render, report, fmt)
                except FeatureUnavailable as err:
                    log.warning("monthly reports: skipping %s: %s", fmt, err.message)
                    continue
                await asyncio.to_thread((partial / f"{name}.{fmt}").write_bytes, body)
                names.append(f"{name}.{fmt}")
        # The month appears complete or not at all: readers never see a half-written set.
        await asyncio.to_thread(self._publish, partial, target)
        await asyncio.to_thread(self._prune, target.parent)
        log.info(
            "monthly reports for district %s, %s written to %s", district_id, first.strftime("%Y-%m"), target
        )
        return [target / n for n in names]

    @staticmethod
    def _publish(partial: Path, target: Path) -> None:
        if target.exists():
            old = target.with_name(target.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(partial, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, target)

    def _prune(self, district_dir: Path) -> None:
        months = sorted(
            p for p in district_dir.iterdir() if p.is_dir() and len(p.name) == 7 and p.name[4] == "-"
        )
        for old in months[: -self.cfg.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
            log.info("monthly reports: removed %s (keeping the last %d)", old, self.cfg.keep_last)

    async def run_forever(self) -> None:
        """Catch up at start, then check every poll interval; a failed run is logged and retried next time."""
        await every(self.cfg.monthly_poll_seconds, self.tick, Retry("monthly reports", log))


def monthly_reports_hook(clock: Clock | None = None) -> RuntimeHook:
    """A runtime hook that runs the monthly job in a named task for the app's lifetime."""

    @stage(Stage.JOBS)
    async def hook(stack: AsyncExitStack, state: FleetState) -> None:
        job = MonthlyReports(state.settings, clock or state.clock)
        task = asyncio.create_task(job.run_forever(), name="monthly-reports")
        state.monthly_reports = job
        state.monthly_reports_task = task

        async def stop() -> None:
            await cancel_and_wait([task], log)

        stack.push_async_callback(stop)

    return hook
