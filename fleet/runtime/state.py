"""The app's runtime: every long-lived object a request or job uses, typed, built once by the lifespan.

Build order (fleet/app.py): the database engine; the in-memory parts that need nothing else (metrics registry,
snapshot holder, artifact store, download pacer, enrollment guard); then the runtime hooks, sorted by `Stage`:
the device plane, then the rollout engine (it sends update commands through the plane's broker), then jobs.
Teardown runs in reverse through the lifespan's exit stack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleet.api.ratelimit import EnrollmentGuard
from fleet.domain.clock import Clock
from fleet.observability.metrics import FleetMetrics, SnapshotHolder
from fleet.services.artifacts import ArtifactStore
from fleet.services.downloads import SchoolPacer
from fleet.settings import Settings

if TYPE_CHECKING:
    from fleet.runtime.plane import DevicePlane
    from fleet.runtime.report_job import MonthlyReports
    from fleet.runtime.rollout_engine import RolloutEngine


@dataclass
class FleetState:
    """What the lifespan builds and hands to every request (through the typed dependencies in api/deps)."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    registry: CollectorRegistry
    metrics: FleetMetrics
    snapshot: SnapshotHolder
    artifact_store: ArtifactStore
    pacer: SchoolPacer
    enrollment_guard: EnrollmentGuard
    # Set by the runtime hooks, in Stage order; None when that part does not run in this process.
    plane: DevicePlane | None = None
    rollout_engine: RolloutEngine | None = None
    monthly_reports: MonthlyReports | None = None
    monthly_reports_task: asyncio.Task[None] | None = None


class Stage(IntEnum):
    """When a runtime hook runs: each stage may use what the earlier stages put on the state."""

    PLANE = 1  # broker, ingest, presence sweep, command delivery, snapshot -> state.plane
    ROLLOUTS = 2  # the rollout engine; its update commands go out through state.plane's broker
    JOBS = 3  # periodic jobs (monthly reports)


# A runtime hook starts background parts inside the lifespan's exit stack (which stops them in reverse).
RuntimeHook = Callable[[AsyncExitStack, FleetState], Awaitable[None]]
H = TypeVar("H", bound=RuntimeHook)


def stage(at: Stage) -> Callable[[H], H]:
    """Mark a runtime hook with the stage it runs in."""

    def mark(hook: H) -> H:
        hook.stage = at  # type: ignore[attr-defined]  # a plain attribute on the hook function
        return hook

    return mark


def in_stage_order(hooks: Sequence[RuntimeHook]) -> list[RuntimeHook]:
    """The hooks sorted by stage (stable within one); a hook without a stage is a programming error."""
    for hook in hooks:
        if not isinstance(getattr(hook, "stage", None), Stage):
            raise TypeError(f"runtime hook {hook!r} has no stage; mark it with @stage(Stage.X)")
    return sorted(hooks, key=lambda h: h.stage)  # type: ignore[attr-defined]  # checked just above
