"""Rollouts, artifacts, per-school update policies, and the paced artifact download for terminals."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ConfigDict, Field, field_validator
from sqlalchemy import select

from fleet.api.deps import Caller, Cursor, FleetState, Limit, Session, State
from fleet.api.errors import error_body
from fleet.api.routes.crud import ObjId
from fleet.api.schemas import In, WallTime
from fleet.domain.permissions import Permission
from fleet.domain.rollouts import FINAL_STATES, GroupPlan, GroupStrategy, Window
from fleet.errors import NotFound
from fleet.persistence.models import Device, School
from fleet.persistence.models_rollouts import Rollout, RolloutDevice
from fleet.services import artifacts as arts
from fleet.services.common import require
from fleet.services.downloads import SchoolPacer
from fleet.services.rollouts import (
    RolloutService,
    RolloutSpec,
    get_school_policy,
    school_budget,
    set_school_policy,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1")
Sha = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


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
    start: bool = True


class WindowIn(_Strict):
    weekday: int = Field(ge=0, le=6)
    start: WallTime
    end: WallTime


class SchoolPolicyIn(_Strict):
    windows: list[WindowIn] = Field(default_factory=list, max_length=50)
    max_concurrent_downloads: int | None = Field(None, ge=1, le=10_000)
    uplink_share: float | None = Field(None, gt=0, le=1)
    max_bytes_per_second: int | None = Field(None, ge=1, le=10**11)


class ArtifactImportIn(_Strict):
    source: Literal["profiles"] = "profiles"


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


def _artifact_out(a: Any) -> dict[str, Any]:
    return {
        "id": a.id,
        "sha256": a.sha256,
        "size": a.size,
        "profile": a.profile_key,
        "version": a.version,
        "filename": a.filename,
        "signature_alg": a.signature_alg,
        "signed": a.signature is not None,
        "created_at": a.created_at,
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
async def pause_rollout(session: Session, caller: Caller, state: State, obj_id: ObjId) -> Any:
    r = await RolloutService(session, caller, state.clock.now()).pause(obj_id)
    metrics = state.metrics
    if metrics is not None:
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


# --- school update policy -------------------------------------------------------------------------------


def _policy_out(school_id: int, p: Any) -> dict[str, Any]:
    if p is None:
        return {
            "school_id": school_id,
            "windows": [],
            "max_concurrent_downloads": None,
            "uplink_share": None,
            "max_bytes_per_second": None,
        }
    return {
        "school_id": school_id,
        "windows": p.windows,
        "max_concurrent_downloads": p.max_concurrent_downloads,
        "uplink_share": p.uplink_share,
        "max_bytes_per_second": p.max_bytes_per_second,
    }


@router.get(
    "/schools/{obj_id}/update-policy",
    tags=["rollouts"],
    summary="A school's maintenance windows and download caps",
)
async def read_school_policy(session: Session, caller: Caller, obj_id: ObjId) -> Any:
    return _policy_out(obj_id, await get_school_policy(session, caller, obj_id))


@router.put(
    "/schools/{obj_id}/update-policy",
    tags=["rollouts"],
    summary="Set a school's maintenance windows and download caps",
)
async def put_school_policy(
    session: Session, caller: Caller, state: State, obj_id: ObjId, body: SchoolPolicyIn
) -> Any:
    windows = [
        {"weekday": w.weekday, "start": w.start.strftime("%H:%M"), "end": w.end.strftime("%H:%M")}
        for w in body.windows
    ]
    p = await set_school_policy(
        session,
        caller,
        state.clock.now(),
        obj_id,
        windows=windows,
        max_concurrent_downloads=body.max_concurrent_downloads,
        uplink_share=body.uplink_share,
        max_bytes_per_second=body.max_bytes_per_second,
    )
    _pacer(state).forget(obj_id)
    return _policy_out(obj_id, p)


# --- artifacts ------------------------------------------------------------------------------------------


def store_of(state: FleetState) -> arts.ArtifactStore:
    return state.artifact_store


@router.get("/artifacts", tags=["rollouts"], summary="The firmware artifact catalogue")
async def list_artifacts(
    session: Session,
    caller: Caller,
    cursor: Cursor = None,
    limit: Limit = 100,
    profile: Annotated[str | None, Query(max_length=120)] = None,
) -> Any:
    page = await arts.list_artifacts(session, caller, cursor=cursor, limit=limit, profile_key=profile)
    return _page(page, _artifact_out)


@router.get("/artifacts/{sha256}", tags=["rollouts"], summary="One artifact by its sha256")
async def get_artifact(session: Session, caller: Caller, sha256: Sha) -> Any:
    return _artifact_out(await arts.get_artifact(session, caller, sha256))


@router.post(
    "/artifacts/import",
    status_code=201,
    tags=["rollouts"],
    summary="Import every firmware profile's artifacts into the content-addressed store",
)
async def import_artifacts(session: Session, caller: Caller, state: State, body: ArtifactImportIn) -> Any:
    require(caller, Permission.MANAGE_ROLLOUTS)
    res = await arts.import_profile_artifacts(
        session, store_of(state), caller, state.clock.now(), signing_key=state.settings.rollouts.signing_key
    )
    return {"imported": res.imported, "already_present": res.already_present}


# --- paced download -------------------------------------------------------------------------------------


def _pacer(state: FleetState) -> SchoolPacer:
    return state.pacer


def _range_error(size: int, message: str) -> JSONResponse:
    return JSONResponse(
        error_body("range_not_satisfiable", message),
        status_code=416,
        headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"},
    )


@router.get(
    "/artifacts/{sha256}/download",
    tags=["rollouts"],
    response_class=Response,
    summary="Download an image with a signed link from an update command (Range supported)",
)
async def download_artifact(
    request: Request,
    session: Session,
    state: State,
    sha256: Sha,
    device: Annotated[int, Query(ge=1, le=2**31 - 1)],
    school: Annotated[int, Query(ge=1, le=2**31 - 1)],
    expires: Annotated[int, Query(ge=0, le=2**40)],
    sig: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")],
) -> Any:
    settings = state.settings.rollouts
    arts.check_grant(
        settings.url_key, arts.DownloadGrant(sha256, device, school, expires), sig, state.clock.now()
    )
    # The link names a device of a school: it must still be there, and be in a live rollout of this image.
    dev = await session.get(Device, device)
    if dev is None or dev.school_id != school:
        raise NotFound("no such download")
    live = (
        (
            await session.execute(
                select(RolloutDevice.state)
                .join(Rollout, Rollout.id == RolloutDevice.rollout_id)
                .where(RolloutDevice.device_id == device, Rollout.artifact_sha256 == sha256)
            )
        )
        .scalars()
        .all()
    )
    if not any(s not in FINAL_STATES for s in live):
        raise NotFound("no such download")
    art = await arts.artifact_by_sha(session, sha256)
    path: Path = store_of(state).path_for(sha256)
    if not path.is_file():
        raise NotFound("artifact missing from the store")
    size = art.size
    rate = await school_budget(session, settings, school)
    school_row = await session.get(School, school)
    school_code = school_row.code if school_row else str(school)
    start, end, status = 0, size - 1, 200
    header = request.headers.get("range")
    if header:
        m = _RANGE.match(header.strip())
        if m is None or (not m.group(1) and not m.group(2)):
            return _range_error(size, "only one byte range of the form bytes=a-b is supported")
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:  # suffix range: the last n bytes
            start = max(0, size - int(m.group(2)))
        if start >= size or start > end:
            return _range_error(size, f"range starts past the end ({size} bytes)")
        status = 206
    length = end - start + 1
    pacer = _pacer(state)
    chunk = settings.chunk_bytes
    metrics = state.metrics

    async def body() -> AsyncIterator[bytes]:
        with path.open("rb") as f:
            f.seek(start)
            left = length
            while left > 0:
                n = min(chunk, left)
                await pacer.acquire(school, rate, n)
                data = await asyncio.to_thread(f.read, n)
                if not data:
                    return
                left -= len(data)
                if metrics is not None:
                    metrics.school_traffic(school_code, "down", len(data))
                yield data

    headers = {"Accept-Ranges": "bytes", "Content-Length": str(length), "ETag": f'"{sha256}"'}
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    log.debug("artifact %s to device %d: bytes %d-%d", sha256[:12], device, start, end)
    return StreamingResponse(
        body(), status_code=status, media_type="application/octet-stream", headers=headers
    )


__all__ = ["SchoolPacer", "datetime", "router"]
