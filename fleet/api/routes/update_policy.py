"""A school's update policy over HTTP: maintenance windows and download caps for rollouts."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Any

from fastapi import APIRouter
from pydantic import ConfigDict, Field

from fleet.api.deps import Caller, Now, Pacer, Session
from fleet.api.routes.crud import ObjId
from fleet.api.schemas import In, WallTime
from fleet.services import update_policy

router = APIRouter(prefix="/api/v1")


class _Strict(In):
    model_config = ConfigDict(extra="forbid")


class WindowIn(_Strict):
    """A maintenance window on one weekday, in the school's wall-clock time; it ends after it starts."""

    weekday: int = Field(ge=0, le=6)
    start: WallTime
    end: WallTime


class SchoolPolicyIn(_Strict):
    windows: list[WindowIn] = Field(default_factory=list, max_length=50)
    max_concurrent_downloads: int | None = Field(None, ge=1, le=10_000)
    uplink_share: float | None = Field(None, gt=0, le=1)
    max_bytes_per_second: int | None = Field(None, ge=1, le=10**11)


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
    return _policy_out(obj_id, await update_policy.get(session, caller, obj_id))


@router.put(
    "/schools/{obj_id}/update-policy",
    tags=["rollouts"],
    summary="Set a school's maintenance windows and download caps",
)
async def put_school_policy(
    session: Session, caller: Caller, clock: Now, pacer: Pacer, obj_id: ObjId, body: SchoolPolicyIn
) -> Any:
    windows = [
        {"weekday": w.weekday, "start": w.start.strftime("%H:%M"), "end": w.end.strftime("%H:%M")}
        for w in body.windows
    ]
    p = await update_policy.put(
        session,
        caller,
        clock,
        obj_id,
        update_policy.PolicySpec(
            windows=windows,
            max_concurrent_downloads=body.max_concurrent_downloads,
            uplink_share=body.uplink_share,
            max_bytes_per_second=body.max_bytes_per_second,
        ),
        pacer,
    )
    return _policy_out(obj_id, p)
