"""Peak-load figures for sites without Grafana: per-period lesson peaks, and the live district picture."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query

from fleet.api.deps import Caller, Session, State
from fleet.observability.metrics import ingest_summary
from fleet.services import peaks

router = APIRouter(prefix="/api/v1/stats", tags=["operations"])


@router.get(
    "/peaks",
    response_model=peaks.SchoolPeaks,
    summary="Peak concurrency, bandwidth and online-vs-expected per lesson period of one school's day",
    description="For each bell period of the school on `date` (its local date; today when omitted): "
    "peak devices online and terminal sessions, peak bytes per second (busiest 5-minute usage bucket) and "
    "uplink utilisation (busier direction against the school's uplink), against the devices the timetable "
    "expects online. Holidays, exam days and days outside term are shown in `day`. Figures a period "
    "never recorded are null.",
)
async def get_peaks(
    session: Session,
    caller: Caller,
    state: State,
    school: Annotated[
        str, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="school id or code")
    ],
    date: Annotated[date | None, Query(description="YYYY-MM-DD, the school's local date")] = None,
) -> Any:
    return await peaks.school_peaks(session, caller, school, date, state.clock.now())


@router.get(
    "/live",
    response_model=peaks.LiveOverview,
    summary="Every school in your scope now: online against expected, lessons, bandwidth, alerts, ingest",
    description="Presence and lessons come from the service's in-memory fleet snapshot (null until the "
    "device plane has published one); bandwidth is the recent rate from the usage roll-up "
    "(`rate_window_seconds`); ingest figures are this process's own.",
)
async def get_live(session: Session, caller: Caller, state: State) -> Any:
    holder = state.snapshot
    metrics = state.metrics
    return await peaks.live_overview(
        session,
        caller,
        snapshot=holder.snapshot() if holder else None,
        ingest=ingest_summary(metrics) if metrics else None,
        now=state.clock.now(),
    )
