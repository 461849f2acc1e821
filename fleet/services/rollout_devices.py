"""A device's update state within a rollout: the commands it is sent, its transitions and retries, and the
tallies per group that the thresholds judge. Shared by the use cases (abort) and the engine."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain import wire
from fleet.domain.rollouts import FINAL_STATES, DeviceUpdateState, GroupTally
from fleet.domain.update_wire import Phase, Progress, UpdateArgs, UpdateProgress, update_args
from fleet.persistence.models_rollouts import (
    FirmwareArtifact,
    Rollout,
    RolloutDevice,
    RolloutDeviceEvent,
    RolloutGroup,
)
from fleet.services.rollout_targets import DeviceTarget, device_targets

# Retry backoff after a failed attempt: 2 minutes, doubling, at most 1 hour (a flaky AP recovers in minutes;
# an hour keeps a broken device from hammering the server all night).
RETRY_BASE = timedelta(minutes=2)
RETRY_CAP = timedelta(hours=1)
# A command lives this long undelivered (offline device) before it is pointless: the gate has moved on.
COMMAND_TTL = timedelta(minutes=30)


class RolloutMetrics(Protocol):
    """The metric a device transition counts (fleet.observability.metrics.FleetMetrics)."""

    def rollout_transition(self, model: str, state: str) -> None: ...


def update_command(
    phase: Phase,
    r: Rollout,
    rd: RolloutDevice,
    now: datetime,
    *,
    size: int,
    url: str | None = None,
    art: FirmwareArtifact | None = None,
    rate: int | None = None,
    not_after: datetime | None = None,
) -> wire.Command:
    cid = str(uuid.uuid4())
    rd.correlation_id = cid
    args = UpdateArgs(
        phase=phase,
        version=r.target_version,
        sha256=r.artifact_sha256,
        size=size,
        url=url,
        signature=art.signature if art else None,
        signature_alg=art.signature_alg if art else "none",
        max_bytes_per_second=rate,
        not_after_ms=int(not_after.timestamp() * 1000) if not_after else None,
    )
    issued = int(now.timestamp() * 1000)
    return wire.Command(
        cid,
        wire.CommandName.UPDATE,
        issued,
        issued + int(COMMAND_TTL.total_seconds() * 1000),
        update_args(args),
    )


def set_device_state(
    session: AsyncSession,
    r: Rollout,
    rd: RolloutDevice,
    state: DeviceUpdateState,
    now: datetime,
    detail: str | None,
    metrics: RolloutMetrics | None = None,
    event: str | None = None,
) -> None:
    changed = rd.state != state.value
    rd.state = state.value
    rd.updated_at = now
    if state in FINAL_STATES:
        rd.finished_at = now
    if state in (DeviceUpdateState.FAILED, DeviceUpdateState.ROLLED_BACK, DeviceUpdateState.CANCELLED):
        rd.reason = detail
    session.add(
        RolloutDeviceEvent(
            rollout_id=r.id,
            device_id=rd.device_id,
            at=now,
            event=event or state.value,
            detail=detail[:300] if detail else None,
        )
    )
    if changed and metrics is not None:
        metrics.rollout_transition(r.profile_key, state.value)


def fail_attempt(
    session: AsyncSession,
    r: Rollout,
    rd: RolloutDevice,
    now: datetime,
    reason: str,
    *,
    retryable: bool,
    metrics: RolloutMetrics | None,
    final_state: DeviceUpdateState = DeviceUpdateState.FAILED,
) -> None:
    """Count a failed attempt: back off and retry while attempts remain, else the final state."""
    rd.attempts += 1
    rd.reason = reason
    if retryable and rd.attempts < r.max_attempts:
        backoff = min(RETRY_CAP, RETRY_BASE * (2 ** (rd.attempts - 1)))
        rd.next_attempt_at = now + backoff
        set_device_state(session, r, rd, DeviceUpdateState.PENDING, now, reason, metrics, event="retry_wait")
        return
    set_device_state(session, r, rd, final_state, now, reason, metrics)


def apply_progress(
    session: AsyncSession,
    r: Rollout,
    rd: RolloutDevice,
    p: UpdateProgress,
    now: datetime,
    metrics: RolloutMetrics | None,
) -> bool:
    """Apply one progress report to a device's update state; False when it no longer applies."""
    st = DeviceUpdateState(rd.state)
    if st in FINAL_STATES:
        return False
    detail = p.reason
    if p.state == Progress.DOWNLOADING:
        if st not in (DeviceUpdateState.SCHEDULED, DeviceUpdateState.DOWNLOADING):
            return False
        if rd.download_started_at is None:
            rd.download_started_at = now
        resumed = (p.offset or 0) > 0
        rd.bytes_done = p.offset or 0
        set_device_state(
            session,
            r,
            rd,
            DeviceUpdateState.DOWNLOADING,
            now,
            f"from byte {p.offset or 0}",
            metrics,
            event="download_resumed" if resumed else "download_started",
        )
    elif p.state == Progress.DOWNLOAD_PAUSED:
        rd.bytes_done = p.offset or rd.bytes_done
        set_device_state(
            session,
            r,
            rd,
            DeviceUpdateState.PENDING,
            now,
            f"window closed at byte {rd.bytes_done}",
            metrics,
            event="download_paused",
        )
    elif p.state == Progress.DOWNLOADED:
        rd.bytes_done = p.size or rd.bytes_done
        set_device_state(session, r, rd, DeviceUpdateState.DOWNLOADED, now, "verified and staged", metrics)
    elif p.state in (
        Progress.DOWNLOAD_FAILED,
        Progress.VERIFY_FAILED,
        Progress.INSTALL_FAILED,
        Progress.REFUSED,
    ):
        fail_attempt(
            session,
            r,
            rd,
            now,
            f"{p.state.value}: {detail or 'no reason given'}",
            retryable=True,
            metrics=metrics,
        )
    elif p.state == Progress.INSTALLING:
        rd.install_started_at = now
        session.add(
            RolloutDeviceEvent(rollout_id=r.id, device_id=rd.device_id, at=now, event="install_started")
        )
    elif p.state == Progress.REBOOTING:
        session.add(RolloutDeviceEvent(rollout_id=r.id, device_id=rd.device_id, at=now, event="rebooting"))
    elif p.state == Progress.SUCCEEDED:
        rd.reported_version = p.version
        if p.version and p.version != r.target_version:
            fail_attempt(
                session,
                r,
                rd,
                now,
                f"reported version {p.version}, expected {r.target_version}",
                retryable=False,
                metrics=metrics,
            )
        else:
            set_device_state(
                session, r, rd, DeviceUpdateState.SUCCEEDED, now, f"running {p.version}", metrics
            )
    elif p.state == Progress.ROLLED_BACK:
        rd.reported_version = p.version
        # A version that failed to boot is not retried on that device: the error threshold decides.
        fail_attempt(
            session,
            r,
            rd,
            now,
            f"rolled back to {p.version}: {detail or 'boot failed'}",
            retryable=False,
            metrics=metrics,
            final_state=DeviceUpdateState.ROLLED_BACK,
        )
    elif p.state == Progress.CANCELLED:
        set_device_state(session, r, rd, DeviceUpdateState.CANCELLED, now, detail or "cancelled", metrics)
    return True


async def cancel_unfinished(
    session: AsyncSession,
    r: Rollout,
    now: datetime,
    queue: list[tuple[DeviceTarget, wire.Command]] | None,
    metrics: RolloutMetrics | None = None,
) -> int:
    """Abort: every device not yet installing is cancelled (and told to drop what it downloaded).

    Devices already installing finish their install (interrupting one would brick it); their final report
    still lands, so no device is left half-way.
    """
    rows = (
        (
            await session.execute(
                select(RolloutDevice).where(
                    RolloutDevice.rollout_id == r.id,
                    RolloutDevice.state.in_(
                        [
                            DeviceUpdateState.PENDING.value,
                            DeviceUpdateState.SCHEDULED.value,
                            DeviceUpdateState.DOWNLOADING.value,
                            DeviceUpdateState.DOWNLOADED.value,
                        ]
                    ),
                )
            )
        )
        .scalars()
        .all()
    )
    targets = await device_targets(
        session, [rd.device_id for rd in rows if rd.state != DeviceUpdateState.PENDING]
    )
    for rd in rows:
        had_work = rd.state != DeviceUpdateState.PENDING
        set_device_state(session, r, rd, DeviceUpdateState.CANCELLED, now, "rollout aborted", metrics)
        if had_work and rd.device_id in targets:
            if queue is None:
                # No engine in this process (the CLI): the service's engine sends it on its next step.
                session.add(
                    RolloutDeviceEvent(
                        rollout_id=r.id, device_id=rd.device_id, at=now, event="cancel_pending"
                    )
                )
                continue
            cmd = update_command(Phase.CANCEL, r, rd, now, size=0)
            queue.append((targets[rd.device_id], cmd))
            session.add(
                RolloutDeviceEvent(rollout_id=r.id, device_id=rd.device_id, at=now, event="cancel_sent")
            )
    for g in (await session.execute(select(RolloutGroup).where(RolloutGroup.rollout_id == r.id))).scalars():
        if g.state in ("pending", "running"):
            g.state = "cancelled"
            g.finished_at = now
    return len(rows)


async def group_tallies(
    session: AsyncSession, rollout_id: int, forgiven: dict[str, int] | None = None
) -> dict[int, GroupTally]:
    rows = (
        await session.execute(
            select(RolloutDevice.group_id, RolloutDevice.state, func.count())
            .where(RolloutDevice.rollout_id == rollout_id)
            .group_by(RolloutDevice.group_id, RolloutDevice.state)
        )
    ).all()
    acc: dict[int, Counter[str]] = {}
    for gid, st, n in rows:
        acc.setdefault(gid, Counter())[st] += n
    out = {}
    for gid, c in acc.items():
        total = sum(n for s, n in c.items() if s != DeviceUpdateState.CANCELLED)
        succeeded = c[DeviceUpdateState.SUCCEEDED.value]
        failed = c[DeviceUpdateState.FAILED.value] + c[DeviceUpdateState.ROLLED_BACK.value]
        excused = min(failed, (forgiven or {}).get(str(gid), 0))
        # Forgiven failures still count as finished (not in flight), but no longer toward the error threshold.
        out[gid] = GroupTally(total, succeeded, failed - excused, total - succeeded - failed)
    return out
