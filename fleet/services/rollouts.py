"""Rollout use cases: create, start, pause, resume, abort, list, get and a device's timeline.

Each use case checks permission and scope, validates, writes an audit row and flushes; the caller's
transaction commits. The engine that drives running rollouts is `fleet.runtime.rollout_engine`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from firmware_profiles import DEFAULT_PROFILE_DIR
from fleet.domain import wire
from fleet.domain.permissions import Permission, Principal
from fleet.domain.rollouts import RolloutStatus
from fleet.errors import Conflict, IllegalTransition, NotFound
from fleet.observability.metrics import RolloutState
from fleet.persistence.models_rollouts import (
    Rollout,
    RolloutDevice,
    RolloutDeviceEvent,
    RolloutGroup,
)
from fleet.services import audit
from fleet.services.common import Page, paginate, require
from fleet.services.rollout_devices import cancel_unfinished, group_tallies
from fleet.services.rollout_specs import (
    MAX_BYTES_PER_SECOND,
    MIN_BYTES_PER_SECOND,
    RolloutChoices,
    RolloutPreview,
    RolloutSpec,
    choices,
    draft,
    preview,
    resolve,
)
from fleet.services.rollout_targets import DeviceTarget, add_device, planned_groups

log = logging.getLogger(__name__)

__all__ = [
    "MAX_BYTES_PER_SECOND",
    "MIN_BYTES_PER_SECOND",
    "RolloutChoices",
    "RolloutPreview",
    "RolloutService",
    "RolloutSpec",
    "rollout_states",
]

# Rows of per-device state returned by `get`; the API pages the rest.
MAX_DEVICES_IN_DETAIL = 500

# --- values ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupProgress:
    id: int
    position: int
    name: str
    kind: str
    state: str
    total: int
    by_state: dict[str, int]
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class RolloutDetail:
    rollout: Rollout
    groups: list[GroupProgress]
    devices: Sequence[RolloutDevice]
    totals: dict[str, int]


# --- validation and scope ---------------------------------------------------------------------------------


def _visible(principal: Principal, r: Rollout) -> bool:
    if principal.district_wide:
        return True
    # A district-wide rollout (no school filter) updates every school's devices: their staff may watch it
    # (`get` shows them only their own schools' devices); only district-wide principals control it.
    return not r.school_ids or bool(set(r.school_ids) & principal.school_ids)


def _may_control(principal: Principal, r: Rollout) -> bool:
    if principal.district_wide:
        return True
    return bool(r.school_ids) and set(r.school_ids) <= principal.school_ids


async def _get_rollout(session: AsyncSession, principal: Principal, rollout_id: int) -> Rollout:
    r = await session.get(Rollout, rollout_id)
    if r is None or not _visible(principal, r):
        raise NotFound(f"rollout {rollout_id} not found")
    return r


def rollout_snapshot(r: Rollout) -> dict[str, Any]:
    return {"state": r.state, "current_group": r.current_group, "state_reason": r.state_reason}


# --- use cases ----------------------------------------------------------------------------------------------


class RolloutService:
    def __init__(
        self,
        session: AsyncSession,
        principal: Principal,
        now: datetime,
        profile_dir: str = str(DEFAULT_PROFILE_DIR),
    ) -> None:
        self.session = session
        self.principal = principal
        self.now = now
        self.profile_dir = profile_dir

    async def preview(self, spec: RolloutSpec) -> RolloutPreview:
        """The groups `create` then `start` would make of the devices matching now, without writing
        anything: the same checks, targets and group plan."""
        require(self.principal, Permission.MANAGE_ROLLOUTS)
        t = await resolve(self.session, self.principal, spec, self.profile_dir)
        return await preview(self.session, draft(spec, t, self.principal.actor, self.now), t)

    async def choices(self) -> RolloutChoices:
        """What this principal may choose from for a new rollout."""
        return await choices(self.session, self.principal)

    async def create(self, spec: RolloutSpec) -> Rollout:
        require(self.principal, Permission.MANAGE_ROLLOUTS)
        t = await resolve(self.session, self.principal, spec, self.profile_dir)
        r = draft(spec, t, self.principal.actor, self.now)
        self.session.add(r)
        await self.session.flush()
        audit.record(
            self.session,
            principal=self.principal,
            at=self.now,
            action="rollout.create",
            object_type="rollout",
            object_id=r.id,
            school_id=t.schools[0] if len(t.schools) == 1 else None,
            after={
                "name": r.name,
                "model": r.profile_key,
                "target_version": r.target_version,
                "schools": list(t.schools),
                "rooms": r.room_ids,
                "plan": r.group_plan,
                "success_threshold": r.success_threshold,
                "error_threshold": r.error_threshold,
                "max_bytes_per_second": spec.max_bytes_per_second,
            },
        )
        if spec.start:
            await self.start(r.id)
        return r

    async def start(self, rollout_id: int) -> Rollout:
        require(self.principal, Permission.MANAGE_ROLLOUTS)
        r = await _get_rollout(self.session, self.principal, rollout_id)
        if not _may_control(self.principal, r):
            raise NotFound(f"rollout {rollout_id} not found")
        if r.state != RolloutStatus.DRAFT:
            raise IllegalTransition(f"rollout {r.id} is {r.state}; only a draft can start")
        busy = (
            await self.session.execute(
                select(Rollout.id, Rollout.state)
                .where(
                    Rollout.model_id == r.model_id,
                    Rollout.id != r.id,
                    Rollout.state.in_([RolloutStatus.RUNNING.value, RolloutStatus.PAUSED.value]),
                )
                .limit(1)
            )
        ).first()
        if busy:
            raise Conflict(
                f"rollout {busy[0]} of model {r.profile_key} is {busy[1]}; one rollout per model at a "
                f"time: let it finish or abort it first"
            )
        before = rollout_snapshot(r)
        groups, by_id = await planned_groups(self.session, r)
        for pos, (name, g) in enumerate(groups):
            row = RolloutGroup(
                rollout_id=r.id,
                position=pos,
                name=name,
                kind=g.kind,
                school_id=g.school_id,
                percent=g.percent,
                state="running" if pos == 0 else "pending",
                started_at=self.now if pos == 0 else None,
            )
            self.session.add(row)
            await self.session.flush()
            for dev_id in g.device_ids:
                dev, version = by_id[dev_id]
                add_device(self.session, r, row, dev, version, self.now)
        r.state = RolloutStatus.RUNNING.value
        r.started_at = self.now
        r.updated_at = self.now
        audit.record(
            self.session,
            principal=self.principal,
            at=self.now,
            action="rollout.start",
            object_type="rollout",
            object_id=r.id,
            before=before,
            after=rollout_snapshot(r),
            summary=f"{len(by_id)} devices in {len(groups)} groups",
        )
        return r

    async def pause(self, rollout_id: int, reason: str = "manual") -> Rollout:
        return await self._transition(
            rollout_id, "pause", {RolloutStatus.RUNNING}, RolloutStatus.PAUSED, reason
        )

    async def resume(self, rollout_id: int) -> Rollout:
        r = await self._transition(rollout_id, "resume", {RolloutStatus.PAUSED}, RolloutStatus.RUNNING, None)
        # The failures that caused the pause are forgiven, or the next step would pause again at once: the
        # error threshold then counts failures after the resume.
        forgiven = {str(gid): t.failed for gid, t in (await group_tallies(self.session, r.id)).items()}
        r.policy = {**r.policy, "forgiven_failures": forgiven}
        return r

    async def abort(
        self, rollout_id: int, sender_queue: list[tuple[DeviceTarget, wire.Command]] | None = None
    ) -> Rollout:
        r = await self._transition(
            rollout_id,
            "abort",
            {RolloutStatus.DRAFT, RolloutStatus.RUNNING, RolloutStatus.PAUSED},
            RolloutStatus.ABORTED,
            "aborted",
        )
        await cancel_unfinished(self.session, r, self.now, sender_queue)
        return r

    async def _transition(
        self, rollout_id: int, action: str, allowed: set[RolloutStatus], to: RolloutStatus, reason: str | None
    ) -> Rollout:
        require(self.principal, Permission.MANAGE_ROLLOUTS)
        r = await _get_rollout(self.session, self.principal, rollout_id)
        if not _may_control(self.principal, r):
            raise NotFound(f"rollout {rollout_id} not found")
        if r.state not in allowed:
            raise IllegalTransition(f"rollout {r.id} is {r.state}; cannot {action}")
        before = rollout_snapshot(r)
        r.state = to.value
        r.state_reason = reason
        r.updated_at = self.now
        if to == RolloutStatus.PAUSED:
            r.paused_at = self.now
        if to == RolloutStatus.RUNNING:
            r.paused_at = None
        if to == RolloutStatus.ABORTED:
            r.finished_at = self.now
        audit.record(
            self.session,
            principal=self.principal,
            at=self.now,
            action=f"rollout.{action}",
            object_type="rollout",
            object_id=r.id,
            before=before,
            after=rollout_snapshot(r),
        )
        return r

    async def list(self, *, cursor: str | None, limit: int, state: str | None = None) -> Page[Rollout]:
        require(self.principal, Permission.READ_OPERATIONS)
        stmt = select(Rollout)
        if state:
            stmt = stmt.where(Rollout.state == state)
        if not self.principal.district_wide:
            # JSON containment differs per backend; filter the (few) rollouts in Python after a coarse query.
            ids = [
                r.id
                for r in (await self.session.execute(select(Rollout))).scalars()
                if _visible(self.principal, r)
            ]
            stmt = stmt.where(Rollout.id.in_(ids or [-1]))
        return await paginate(self.session, stmt, Rollout, cursor, limit)

    async def get(self, rollout_id: int, *, device_state: str | None = None) -> RolloutDetail:
        require(self.principal, Permission.READ_OPERATIONS)
        r = await _get_rollout(self.session, self.principal, rollout_id)
        groups = (
            (
                await self.session.execute(
                    select(RolloutGroup)
                    .where(RolloutGroup.rollout_id == r.id)
                    .order_by(RolloutGroup.position)
                )
            )
            .scalars()
            .all()
        )
        dstmt = select(RolloutDevice).where(RolloutDevice.rollout_id == r.id)
        if not self.principal.district_wide:
            dstmt = dstmt.where(RolloutDevice.school_id.in_(sorted(self.principal.school_ids) or [-1]))
        counts = (
            await self.session.execute(
                select(RolloutDevice.group_id, RolloutDevice.state, func.count())
                .where(dstmt.whereclause)  # type: ignore[arg-type]  # built with a WHERE above
                .group_by(RolloutDevice.group_id, RolloutDevice.state)
            )
        ).all()
        per_group: dict[int, dict[str, int]] = {}
        totals: Counter[str] = Counter()
        for gid, st, n in counts:
            per_group.setdefault(gid, {})[st] = n
            totals[st] += n
        if device_state:
            dstmt = dstmt.where(RolloutDevice.state == device_state)
        devices = (
            (await self.session.execute(dstmt.order_by(RolloutDevice.id).limit(MAX_DEVICES_IN_DETAIL)))
            .scalars()
            .all()
        )
        progress = [
            GroupProgress(
                g.id,
                g.position,
                g.name,
                g.kind,
                g.state,
                sum(per_group.get(g.id, {}).values()),
                per_group.get(g.id, {}),
                g.started_at,
                g.finished_at,
            )
            for g in groups
        ]
        return RolloutDetail(r, progress, devices, dict(totals))

    async def timeline(self, rollout_id: int, device_id: int) -> Sequence[RolloutDeviceEvent]:
        require(self.principal, Permission.READ_OPERATIONS)
        r = await _get_rollout(self.session, self.principal, rollout_id)
        rd = (
            await self.session.execute(
                select(RolloutDevice).where(
                    RolloutDevice.rollout_id == r.id, RolloutDevice.device_id == device_id
                )
            )
        ).scalar_one_or_none()
        if rd is None or not self.principal.sees_school(rd.school_id):
            raise NotFound(f"device {device_id} is not in rollout {rollout_id}")
        return (
            (
                await self.session.execute(
                    select(RolloutDeviceEvent)
                    .where(RolloutDeviceEvent.rollout_id == r.id, RolloutDeviceEvent.device_id == device_id)
                    .order_by(RolloutDeviceEvent.at, RolloutDeviceEvent.id)
                )
            )
            .scalars()
            .all()
        )


async def rollout_states(session: AsyncSession) -> tuple[RolloutState, ...]:
    """Rollouts for the metrics snapshot: every rollout's status, and devices per state for active ones."""
    rows = (await session.execute(select(Rollout.id, Rollout.name, Rollout.profile_key, Rollout.state))).all()
    active = [r for r in rows if r[3] in (RolloutStatus.RUNNING.value, RolloutStatus.PAUSED.value)]
    counts: dict[int, list[tuple[str, int]]] = {}
    if active:
        for rid, st, n in (
            await session.execute(
                select(RolloutDevice.rollout_id, RolloutDevice.state, func.count())
                .where(RolloutDevice.rollout_id.in_([r[0] for r in active]))
                .group_by(RolloutDevice.rollout_id, RolloutDevice.state)
            )
        ).all():
            counts.setdefault(rid, []).append((st, int(n)))
    return tuple(
        RolloutState(
            rollout=f"{rid}:{name}"[:64],
            model=profile,
            status=state,
            devices_by_state=tuple(sorted(counts.get(rid, []))),
        )
        for rid, name, profile, state in rows
    )
