"""Rollouts over HTTP: create, list, follow per group and device, start, pause, resume, abort."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import ConfigDict, Field, field_validator

from fleet.api.deps import Caller, Cursor, FleetState, Limit, Metrics, Session, State
from fleet.api.routes.crud import ObjId
from fleet.api.schemas import In
from fleet.domain.rollouts import GroupPlan, GroupStrategy, Window
from fleet.persistence.models_rollouts import Rollout, RolloutDevice
from fleet.services.rollouts import (
    MAX_BYTES_PER_SECOND,
    MIN_BYTES_PER_SECOND,
    RolloutService,
    RolloutSpec,
)

router = APIRouter(prefix="/api/v1")


def _page(page: Any, conv: Callable[[Any], Any]) -> dict[str, Any]:
    return {
        "items": [conv(i) for i in page.items],
        "total": page.total,
        "next_cursor": page.next_cursor,
        "limit": page.limit,
    }


# --- bodies ---------------------------------------------------------------------------------------------


class _Strict(In):
    model_config = ConfigDict(extra="forbid")


class GroupPlanIn(_Strict):
    canary_size: int = Field(1, ge=1, le=1000)
    canary_percent: float | None = Field(None, gt=0, le=50)
    strategy: GroupStrategy = GroupStrategy.PER_SCHOOL
    percents: list[float] = Field(default_factory=lambda: [25.0, 50.0, 100.0], min_length=1, max_length=20)

    @field_validator("percents")
    @classmethod
    def _rising(cls, v: list[float]) -> list[float]:
        if any(not 0 < p <= 100 for p in v) or v != sorted(v) or v[-1] != 100:
            raise ValueError("percents must rise, each in (0, 100], ending at 100")
        return v


class RolloutIn(_Strict):
    """model_id names a device model with a firmware profile, and target_version an imported artifact of that
    profile; group percents rise, each in (0, 100], ending at 100."""

    name: str = Field(min_length=1, max_length=200)
    model_id: int = Field(ge=1, le=2**31 - 1)
    target_version: str = Field(min_length=1, max_length=64)
    school_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(default_factory=list, max_length=1000)
    room_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(default_factory=list, max_length=5000)
    from_versions: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=50
    )
    groups: GroupPlanIn = Field(default_factory=GroupPlanIn)
    success_threshold: float = Field(0.9, ge=0, le=1)
    error_threshold: float = Field(0.2, ge=0, le=1)
    max_attempts: int = Field(3, ge=1, le=10)
    download_window: Window = Window.OUTSIDE_LESSONS
    install_window: Window = Window.OUTSIDE_LESSONS
    install_seconds: int = Field(600, ge=60, le=4 * 3600)
    max_bytes_per_second: int | None = Field(None, ge=MIN_BYTES_PER_SECOND, le=MAX_BYTES_PER_SECOND)
    start: bool = True


# --- views ----------------------------------------------------------------------------------------------


def _rollout_out(r: Rollout) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "model_id": r.model_id,
        "profile": r.profile_key,
        "target_version": r.target_version,
        "artifact_sha256": r.artifact_sha256,
        "school_ids": r.school_ids,
        "room_ids": r.room_ids,
        "from_versions": r.from_versions,
        "groups": r.group_plan,
        "success_threshold": r.success_threshold,
        "error_threshold": r.error_threshold,
        "max_attempts": r.max_attempts,
        "policy": r.policy,
        "state": r.state,
        "state_reason": r.state_reason,
        "current_group": r.current_group,
        "created_by": r.created_by,
        "created_at": r.created_at,
        "started_at": r.started_at,
        "paused_at": r.paused_at,
        "finished_at": r.finished_at,
    }


def _device_out(d: RolloutDevice) -> dict[str, Any]:
    return {
        "device_id": d.device_id,
        "group_id": d.group_id,
        "school_id": d.school_id,
        "room_id": d.room_id,
        "state": d.state,
        "from_version": d.from_version,
        "to_version": d.to_version,
        "reported_version": d.reported_version,
        "attempts": d.attempts,
        "reason": d.reason,
        "bytes_done": d.bytes_done,
        "updated_at": d.updated_at,
        "scheduled_at": d.scheduled_at,
        "download_started_at": d.download_started_at,
        "install_started_at": d.install_started_at,
        "finished_at": d.finished_at,
        "next_attempt_at": d.next_attempt_at,
    }


def _engine(state: FleetState) -> Any:
    return state.rollout_engine


# --- rollouts -------------------------------------------------------------------------------------------


@router.post(
    "/rollouts", status_code=201, tags=["rollouts"], summary="Create (and by default start) a rollout"
)
async def create_rollout(session: Session, caller: Caller, state: State, body: RolloutIn) -> Any:
    g = body.groups
    spec = RolloutSpec(
        name=body.name,
        model_id=body.model_id,
        target_version=body.target_version,
        school_ids=tuple(body.school_ids),
        room_ids=tuple(body.room_ids),
        from_versions=tuple(body.from_versions),
        plan=GroupPlan(g.canary_size, g.canary_percent, g.strategy, tuple(g.percents)),
        success_threshold=body.success_threshold,
        error_threshold=body.error_threshold,
        max_attempts=body.max_attempts,
        download_window=body.download_window,
        install_window=body.install_window,
        install_seconds=body.install_seconds,
        max_bytes_per_second=body.max_bytes_per_second,
        start=body.start,
    )
    r = await RolloutService(session, caller, state.clock.now()).create(spec)
    return _rollout_out(r)


@router.get("/rollouts", tags=["rollouts"], summary="List rollouts")
async def list_rollouts(
    session: Session,
    caller: Caller,
    state: State,
    cursor: Cursor = None,
    limit: Limit = 100,
    status: Annotated[str | None, Query(max_length=16)] = None,
) -> Any:
    page = await RolloutService(session, caller, state.clock.now()).list(
        cursor=cursor, limit=limit, state=status
    )
    return _page(page, _rollout_out)


@router.get(
    "/rollouts/{obj_id}",
    tags=["rollouts"],
    summary="A rollout with its group progress and per-device states (first 500 devices)",
)
async def get_rollout(
    session: Session,
    caller: Caller,
    state: State,
    obj_id: ObjId,
    device_state: Annotated[str | None, Query(max_length=16)] = None,
) -> Any:
    d = await RolloutService(session, caller, state.clock.now()).get(obj_id, device_state=device_state)
    return {
        **_rollout_out(d.rollout),
        "totals": d.totals,
        "group_progress": [
            {
                "id": g.id,
                "position": g.position,
                "name": g.name,
                "kind": g.kind,
                "state": g.state,
                "total": g.total,
                "by_state": g.by_state,
                "started_at": g.started_at,
                "finished_at": g.finished_at,
            }
            for g in d.groups
        ],
        "devices": [_device_out(x) for x in d.devices],
    }


@router.get(
    "/rollouts/{obj_id}/devices/{device_id}/timeline",
    tags=["rollouts"],
    summary="One device's rollout timeline: commands sent and progress reported",
)
async def device_timeline(
    session: Session, caller: Caller, state: State, obj_id: ObjId, device_id: ObjId
) -> Any:
    events = await RolloutService(session, caller, state.clock.now()).timeline(obj_id, device_id)
    return {"items": [{"at": e.at, "event": e.event, "detail": e.detail} for e in events]}


@router.post("/rollouts/{obj_id}/start", tags=["rollouts"], summary="Start a draft rollout")
async def start_rollout(session: Session, caller: Caller, state: State, obj_id: ObjId) -> Any:
    return _rollout_out(await RolloutService(session, caller, state.clock.now()).start(obj_id))


@router.post(
    "/rollouts/{obj_id}/pause", tags=["rollouts"], summary="Pause: no new downloads or installs start"
)
async def pause_rollout(
    session: Session, caller: Caller, state: State, metrics: Metrics, obj_id: ObjId
) -> Any:
    r = await RolloutService(session, caller, state.clock.now()).pause(obj_id)
    metrics.rollout_paused("manual")
    return _rollout_out(r)


@router.post("/rollouts/{obj_id}/resume", tags=["rollouts"], summary="Resume a paused rollout")
async def resume_rollout(session: Session, caller: Caller, state: State, obj_id: ObjId) -> Any:
    return _rollout_out(await RolloutService(session, caller, state.clock.now()).resume(obj_id))


@router.post(
    "/rollouts/{obj_id}/abort",
    tags=["rollouts"],
    summary="Abort: pending and downloading devices are cancelled; installs in progress finish",
)
async def abort_rollout(session: Session, caller: Caller, state: State, obj_id: ObjId) -> Any:
    engine = _engine(state)
    if engine is None:
        return _rollout_out(await RolloutService(session, caller, state.clock.now()).abort(obj_id))
    return _rollout_out(await engine.abort(caller, obj_id, state.clock.now()))
