"""A school's update policy: the maintenance windows and download caps its rollouts keep to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.clock import Clock
from fleet.domain.permissions import Principal
from fleet.persistence.models_rollouts import SchoolUpdatePolicy
from fleet.services.downloads import SchoolPacer
from fleet.services.rollout_policy import get_school_policy, set_school_policy


@dataclass(frozen=True, slots=True)
class PolicySpec:
    windows: list[dict[str, Any]]  # {"weekday": 0-6, "start": "HH:MM", "end": "HH:MM"}
    max_concurrent_downloads: int | None
    uplink_share: float | None
    max_bytes_per_second: int | None


async def get(session: AsyncSession, principal: Principal, school_id: int) -> SchoolUpdatePolicy | None:
    """The school's policy, or None when it has none (the district defaults apply)."""
    return await get_school_policy(session, principal, school_id)


async def put(
    session: AsyncSession,
    principal: Principal,
    clock: Clock,
    school_id: int,
    spec: PolicySpec,
    pacer: SchoolPacer | None = None,
) -> SchoolUpdatePolicy:
    """Replace the school's policy; downloads in flight pick up the new rate at their next chunk."""
    policy = await set_school_policy(
        session,
        principal,
        clock.now(),
        school_id,
        windows=spec.windows,
        max_concurrent_downloads=spec.max_concurrent_downloads,
        uplink_share=spec.uplink_share,
        max_bytes_per_second=spec.max_bytes_per_second,
    )
    if pacer is not None:
        pacer.forget(school_id)
    return policy
