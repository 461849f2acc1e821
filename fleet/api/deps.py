"""Request dependencies: the typed runtime parts, a unit of work, and the authenticated principal."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.api.ratelimit import EnrollmentGuard
from fleet.domain.clock import Clock
from fleet.domain.permissions import Principal
from fleet.errors import Unauthenticated
from fleet.observability.metrics import FleetMetrics, SnapshotHolder
from fleet.persistence.db import run_after_commit
from fleet.persistence.directory import reference_changed, track_reference_changes
from fleet.runtime.state import FleetState
from fleet.services.artifacts import ArtifactStore
from fleet.services.common import CURSOR_PATTERN, MAX_PAGE_SIZE
from fleet.services.downloads import SchoolPacer
from fleet.services.ports import DevicePlanePort
from fleet.services.tokens import authenticate

log = logging.getLogger(__name__)

__all__ = ["FleetState"]


def get_state(request: Request) -> FleetState:
    return request.app.state.fleet


State = Annotated[FleetState, Depends(get_state)]


async def get_session(state: State) -> AsyncIterator[AsyncSession]:
    """One transaction per request: commit when the handler returns, roll back when it raises.

    After the commit: what the services asked to run once the change is durable (a broker credential sync, a
    command dispatcher wake-up), and, when reference data changed, this process's directory is refreshed."""
    async with state.sessions() as session:
        track_reference_changes(session)
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        if reference_changed(session) and state.plane is not None:
            await state.plane.reference_changed()
        await run_after_commit(session)


# scope="function": commit before the response is sent, so a failed commit is the answer.
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="API token from `labfleet token create`")


async def get_principal(
    state: State, session: Session, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthenticated("an API token is required (Authorization: Bearer <token>)")
    return await authenticate(session, creds.credentials, state.clock.now())


Caller = Annotated[Principal, Depends(get_principal)]


def clock_of(state: State) -> Clock:
    return state.clock


def metrics_of(state: State) -> FleetMetrics:
    return state.metrics


def snapshot_of(state: State) -> SnapshotHolder:
    return state.snapshot


def plane_of(state: State) -> DevicePlanePort | None:
    return state.plane


def artifact_store_of(state: State) -> ArtifactStore:
    return state.artifact_store


def pacer_of(state: State) -> SchoolPacer:
    return state.pacer


def enrollment_guard_of(state: State) -> EnrollmentGuard:
    return state.enrollment_guard


Now = Annotated[Clock, Depends(clock_of)]
Metrics = Annotated[FleetMetrics, Depends(metrics_of)]
Snapshot = Annotated[SnapshotHolder, Depends(snapshot_of)]
Plane = Annotated[DevicePlanePort | None, Depends(plane_of)]
Store = Annotated[ArtifactStore, Depends(artifact_store_of)]
Pacer = Annotated[SchoolPacer, Depends(pacer_of)]
Guard = Annotated[EnrollmentGuard, Depends(enrollment_guard_of)]

# The pattern is documented (and exact); the service refuses anything else with its own words.
Cursor = Annotated[
    str | None,
    Query(
        max_length=18,
        description="next_cursor from the previous page (the last key of that page, in decimal)",
        json_schema_extra={"pattern": CURSOR_PATTERN},
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"page size, at most {MAX_PAGE_SIZE}")]
