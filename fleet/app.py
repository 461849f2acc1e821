"""The application factory: `create_app(settings)` builds the FastAPI app and its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from fleet import __version__, console
from fleet.api import errors, openapi
from fleet.api.ratelimit import EnrollmentGuard
from fleet.api.routes import (
    alerts,
    artifacts,
    asset_labels,
    audit,
    claim_tokens,
    commands,
    credentials,
    dead_letters,
    device_state,
    downloads,
    enrollment,
    health,
    imports,
    inventory,
    presence,
    reports,
    rollouts,
    stats,
    stocktake,
    tokens,
    update_policy,
)
from fleet.api.transport import HstsMiddleware
from fleet.domain.clock import Clock, SystemClock
from fleet.observability.exposition import MetricsAccess
from fleet.observability.http import HttpMetricsMiddleware, metrics_router
from fleet.observability.metrics import FleetMetrics, FleetStateCollector, SnapshotHolder
from fleet.persistence.db import create_engine, session_factory, upgrade
from fleet.runtime.state import FleetState, RuntimeHook, in_stage_order
from fleet.services.artifacts import ArtifactStore
from fleet.services.downloads import SchoolPacer
from fleet.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["RuntimeHook", "create_app"]

DESCRIPTION = """
LabFleet runs the hardware fleet of a school district's AI-education rollout: schools and rooms, device
inventory and lifecycle, timetables, bulk import, roles and audit.

Authenticate with `Authorization: Bearer <token>`; create a token with `labfleet token create`.
Objects outside your schools answer 404; actions outside your role answer 403.
"""


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    migrate: bool = True,
    runtime_hooks: Sequence[RuntimeHook] | None = None,
) -> FastAPI:
    """Build the service. `migrate` upgrades the schema on start; hooks start optional background parts,
    in the order of their `Stage` (fleet/runtime/state.py)."""
    hooks = in_stage_order(runtime_hooks or [])

    # One registry per app (never the global one): event metrics, plus state gauges read from memory at
    # scrape.
    registry = CollectorRegistry()
    fleet_metrics = FleetMetrics(registry)
    snapshot = SnapshotHolder()
    registry.register(FleetStateCollector(snapshot))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if migrate:
                await upgrade(settings.database_url)
            engine = create_engine(settings.database_url)
            stack.push_async_callback(engine.dispose)
            api = settings.api
            state = FleetState(
                settings=settings,
                engine=engine,
                sessions=session_factory(engine),
                clock=clock or SystemClock(),
                registry=registry,
                metrics=fleet_metrics,
                snapshot=snapshot,
                artifact_store=ArtifactStore(settings.rollouts.artifact_dir),
                pacer=SchoolPacer(settings.rollouts.burst_seconds),
                enrollment_guard=EnrollmentGuard(
                    api.enroll_failures_per_minute_per_source, api.enroll_failures_per_minute_per_token
                ),
            )
            app.state.fleet = state
            for hook in hooks:  # device plane, then rollout engine, then jobs (Stage order)
                await hook(stack, state)
            log.info(
                "LabFleet %s ready (database %s)",
                __version__,
                engine.url.render_as_string(hide_password=True),
            )
            yield
        log.info("LabFleet stopped")

    app = FastAPI(
        title="LabFleet",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs and /redoc are served by the console from packaged assets (no CDN: they work offline).
        docs_url=None,
        redoc_url=None,
        openapi_tags=[
            {"name": t}
            for t in (
                "districts",
                "schools",
                "rooms",
                "device-models",
                "devices",
                "timetables",
                "calendar",
                "imports",
                "tokens",
                "audit",
                "health",
                "rollouts",
                "enrollment",
                "alerts",
                "commands",
                "operations",
                "reports",
            )
        ],
    )
    errors.install(app)
    openapi.install(app)
    app.add_middleware(
        errors.BodyLimit,
        max_bytes=settings.http.max_body_bytes,
        import_max_bytes=settings.http.max_import_bytes,
        import_prefix=("/api/v1/imports/", "/deliveries/"),
    )
    app.add_middleware(HttpMetricsMiddleware, metrics=fleet_metrics)
    app.add_middleware(HstsMiddleware, max_age_s=settings.http.hsts_max_age_s)
    app.include_router(
        metrics_router(
            registry,
            MetricsAccess.from_settings(settings.metrics.allowed_networks, settings.metrics.token or None),
        )
    )
    # One router per feature (fleet/api/routes/<feature>.py over fleet/services/<feature>.py).
    for feature in (
        health,
        inventory,
        tokens,
        audit,
        imports,
        rollouts,
        update_policy,
        artifacts,
        downloads,
        claim_tokens,
        enrollment,
        credentials,
        device_state,
        presence,
        alerts,
        commands,
        dead_letters,
        reports,
        asset_labels,
        stats,
        stocktake,
    ):
        app.include_router(feature.router)
    console.install(app)
    return app
