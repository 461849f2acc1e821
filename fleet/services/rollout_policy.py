"""Update policy: a rollout's default windows and timings; a school's update windows and download caps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.permissions import Permission, Principal
from fleet.domain.rollouts import SchoolTimetable, Window, parse_windows, school_budget_bytes_per_second
from fleet.errors import InvalidInput, NotFound
from fleet.persistence.models import School
from fleet.persistence.models_rollouts import SchoolUpdatePolicy
from fleet.services import audit
from fleet.services.common import require
from fleet.services.timetable import load_school_timetable
from fleet.settings import RolloutSettings

DEFAULT_POLICY: dict[str, Any] = {
    "download_window": Window.OUTSIDE_LESSONS.value,
    "install_window": Window.OUTSIDE_LESSONS.value,
    # An install and reboot takes a terminal ~5 minutes; 10 leave margin before the next bell.
    "install_seconds": 600,
    # A download needs at least 2 minutes of window to be worth starting (it pauses and resumes at the edge).
    "min_download_seconds": 120,
    # No progress report for this long: the attempt has failed (device off, Wi-Fi gone).
    "stall_seconds": 3600,
}


# --- values ---------------------------------------------------------------------------------------------


async def set_school_policy(
    session: AsyncSession,
    principal: Principal,
    now: datetime,
    school_id: int,
    *,
    windows: list[dict[str, Any]],
    max_concurrent_downloads: int | None,
    uplink_share: float | None,
    max_bytes_per_second: int | None,
) -> SchoolUpdatePolicy:
    """Set a school's maintenance windows and download caps (replaces the previous policy)."""
    require(principal, Permission.MANAGE_ROLLOUTS)
    school = await session.get(School, school_id)
    if school is None or not principal.sees_school(school_id):
        raise NotFound(f"school {school_id} not found")
    try:
        parse_windows(windows)
    except ValueError as err:
        raise InvalidInput(str(err), details=[{"field": "windows", "reason": str(err)}]) from err
    if uplink_share is not None and not 0 < uplink_share <= 1:
        raise InvalidInput("uplink_share must be in (0, 1]")
    row = await session.get(SchoolUpdatePolicy, school_id)
    before = None
    if row is None:
        row = SchoolUpdatePolicy(school_id=school_id)
        session.add(row)
    else:
        before = {
            "windows": row.windows,
            "max_concurrent_downloads": row.max_concurrent_downloads,
            "uplink_share": row.uplink_share,
            "max_bytes_per_second": row.max_bytes_per_second,
        }
    row.windows = windows
    row.max_concurrent_downloads = max_concurrent_downloads
    row.uplink_share = uplink_share
    row.max_bytes_per_second = max_bytes_per_second
    row.updated_at = now
    await session.flush()
    audit.record(
        session,
        principal=principal,
        at=now,
        action="school.update_policy",
        object_type="school",
        object_id=school_id,
        school_id=school_id,
        before=before,
        after={
            "windows": windows,
            "max_concurrent_downloads": max_concurrent_downloads,
            "uplink_share": uplink_share,
            "max_bytes_per_second": max_bytes_per_second,
        },
    )
    return row


async def get_school_policy(
    session: AsyncSession, principal: Principal, school_id: int
) -> SchoolUpdatePolicy | None:
    require(principal, Permission.READ_OPERATIONS)
    school = await session.get(School, school_id)
    if school is None or not principal.sees_school(school_id):
        raise NotFound(f"school {school_id} not found")
    return await session.get(SchoolUpdatePolicy, school_id)


# --- membership -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SchoolLimits:
    """What updates may use at one school: its timetable and windows, byte rate and download slots."""

    timetable: SchoolTimetable
    budget: int  # bytes per second
    max_concurrent: int


async def load_school_limits(
    session: AsyncSession, settings: RolloutSettings, school_id: int
) -> SchoolLimits:
    """A school's timetable, update windows, byte budget and concurrent-download cap, from its policy."""
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound(f"school {school_id} not found")
    periods, calendar = await load_school_timetable(session, school_id)
    pol = await session.get(SchoolUpdatePolicy, school_id)
    windows = parse_windows(pol.windows) if pol and pol.windows else ()
    share = pol.uplink_share if pol and pol.uplink_share else settings.default_uplink_share
    cap = pol.max_bytes_per_second if pol else None
    conc = (
        pol.max_concurrent_downloads
        if pol and pol.max_concurrent_downloads
        else settings.default_max_concurrent_downloads
    )
    return SchoolLimits(
        SchoolTimetable(school.timezone, tuple(periods), tuple(calendar), windows),
        school_budget_bytes_per_second(school.uplink_mbps, share, cap),
        max(1, conc),
    )


async def school_budget(session: AsyncSession, settings: RolloutSettings, school_id: int) -> int:
    """The byte rate updates may use at one school (the artifact server's token-bucket rate)."""
    return (await load_school_limits(session, settings, school_id)).budget
