"""The nightly retention run (fleet/services/retention.py), at `retention.run_hour_utc` every day.

The clock and the sleep are injected, so a test walks the job through several nights without waiting.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.domain.clock import Clock
from fleet.domain.enums import Role
from fleet.domain.permissions import Principal
from fleet.runtime.state import Stage, stage
from fleet.runtime.supervise import Retry, Sleep, cancel_and_wait, every
from fleet.services import retention
from fleet.settings import RetentionSettings

if TYPE_CHECKING:
    from fleet.runtime.state import FleetState, RuntimeHook

log = logging.getLogger(__name__)

JOB = Principal(name="retention", role=Role.ADMIN, district_wide=True, school_ids=frozenset())


def seconds_until(now: datetime, hour: int) -> float:
    """Seconds from `now` to the next `hour`:00 UTC (a full day when it is exactly that time)."""
    nxt = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if nxt <= now:
        nxt += timedelta(days=1)
    return (nxt - now).total_seconds()


class RetentionJob:
    def __init__(
        self,
        cfg: RetentionSettings,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        self.sessions = sessions
        self.clock = clock
        self.sleep = sleep
        self.last: retention.RetentionResult | None = None

    async def tick(self) -> retention.RetentionResult:
        self.last = await retention.run(self.sessions, JOB, self.cfg, self.clock.now())
        log.info("retention: deleted %s", {k: v for k, v in self.last.rows.items() if v} or "nothing")
        return self.last

    def _wait(self) -> float:
        return seconds_until(self.clock.now(), self.cfg.run_hour_utc)

    async def run_forever(self) -> None:
        await every(
            self._wait, self.tick, Retry("retention", log), first_delay=self._wait(), sleep=self.sleep
        )


def retention_hook() -> RuntimeHook:
    """A runtime hook that runs the nightly retention job in a named task for the app's lifetime."""

    @stage(Stage.JOBS)
    async def hook(stack: AsyncExitStack, state: FleetState) -> None:
        job = RetentionJob(state.settings.retention, state.sessions, state.clock)
        task = asyncio.create_task(job.run_forever(), name="retention")

        async def stop() -> None:
            await cancel_and_wait([task], log)

        stack.push_async_callback(stop)

    return hook
