"""Rollout use cases (create, start, pause, resume, abort, read) and the engine that drives running rollouts:
`RolloutEngine.step(now)` plans, gates and sends commands; `RolloutEngine.on_progress` takes device reports.

The engine is deterministic for a given database and `now`, so tests drive it on a fast clock.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from firmware_profiles import DEFAULT_PROFILE_DIR, load_profile_key
from fleet.domain import wire
from fleet.domain.enums import DeviceStatus, Transport
from fleet.domain.permissions import SYSTEM, Permission, Principal
from fleet.domain.rollouts import (
    DOWNLOAD_SLOT_STATES,
    FINAL_STATES,
    DeviceUpdateState,
    Gate,
    GroupPlan,
    GroupStrategy,
    GroupTally,
    GroupVerdict,
    PlannedGroup,
    RolloutStatus,
    SchoolTimetable,
    Window,
    gate,
    judge_group,
    parse_windows,
    plan_groups,
    school_budget_bytes_per_second,
)
from fleet.domain.update_wire import Phase, Progress, UpdateArgs, UpdateProgress, update_args
from fleet.errors import Conflict, IllegalTransition, InvalidInput, NotFound
from fleet.persistence.models import Device, DeviceModel, Room, School
from fleet.persistence.models_mqtt import DeviceCredential, DeviceState
from fleet.persistence.models_rollouts import (
    FirmwareArtifact,
    Rollout,
    RolloutDevice,
    RolloutDeviceEvent,
    RolloutGroup,
    SchoolUpdatePolicy,
)
from fleet.services import audit
from fleet.services.artifacts import DownloadGrant, download_path
from fleet.services.common import Page, paginate, require
from fleet.services.timetable import load_school_timetable
from fleet.settings import RolloutSettings

log = logging.getLogger(__name__)

# Devices a rollout may touch: provisioned or in service (not in repair, retired or lost).
UPDATABLE_STATUSES = (DeviceStatus.PROVISIONED.value, DeviceStatus.IN_SERVICE.value)
# Retry backoff after a failed attempt: 2 minutes, doubling, at most 1 hour (a flaky AP recovers in minutes;
# an hour keeps a broken device from hammering the server all night).
RETRY_BASE = timedelta(minutes=2)
RETRY_CAP = timedelta(hours=1)
# A command lives this long undelivered (offline device) before it is pointless: the gate has moved on.
COMMAND_TTL = timedelta(minutes=30)
# Aborts from the CLI are told to devices by the service's engine for this long afterwards (a day covers a
# service restart overnight; devices that stay silent longer have dropped their partial image by TTL anyway).
CANCEL_FLUSH_HORIZON = timedelta(days=1)
# Rows of per-device state returned by `get`; the API pages the rest.
MAX_DEVICES_IN_DETAIL = 500

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


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    name: str
    model_id: int
    target_version: str
    school_ids: tuple[int, ...] = ()
    room_ids: tuple[int, ...] = ()
    from_versions: tuple[str, ...] = ()
    plan: GroupPlan = field(default_factory=GroupPlan)
    success_threshold: float = 0.9
    error_threshold: float = 0.2
    max_attempts: int = 3
    download_window: Window = Window.OUTSIDE_LESSONS
    install_window: Window = Window.OUTSIDE_LESSONS
    install_seconds: int = 600
    start: bool = True


@dataclass(frozen=True, slots=True)
class DeviceTarget:
    """Where a command for one device goes."""

    device_id: int
    identity: str  # MQTT client id (or serial number)
    school_code: str
    transport: str
    # Presence as last reported; a serial kit is reachable only while an edge agent bridges it (online).
    online: bool | None = None


class UpdateSender(Protocol):
    """Delivers an update command to a device: MQTT for terminals, the edge agent for serial devices."""

    async def send(self, target: DeviceTarget, command: wire.Command) -> None: ...


class EdgeFlasher(Protocol):
    """Delivers an update command to a serial device (robot, kit) through the edge agent that bridges it.

    In the service this is the MQTT link too: the agent holds an MQTT session per kit on the kit's own `cmd`
    topic, downloads the image with the same signed URL, flashes it with the drivers (robot A/B slots,
    STK500, MicroPython files; fleet.runtime.edge_flash) and reports progress exactly like a terminal.
    A kit no agent bridges (offline) waits in `pending` with the reason "waiting for an edge agent".
    """

    async def send(self, target: DeviceTarget, command: wire.Command) -> None: ...


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


@dataclass(slots=True)
class StepReport:
    commands: int = 0
    paused: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    waiting: Counter[str] = field(default_factory=Counter)


# --- validation and scope ---------------------------------------------------------------------------------


def _fraction(name: str, v: float) -> None:
    if not 0.0 <= v <= 1.0:
        raise InvalidInput(
            f"{name} must be between 0 and 1", details=[{"field": name, "reason": "out of range"}]
        )


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


def _snap(r: Rollout) -> dict[str, Any]:
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

    async def create(self, spec: RolloutSpec) -> Rollout:
        require(self.principal, Permission.MANAGE_ROLLOUTS)
        _fraction("success_threshold", spec.success_threshold)
        _fraction("error_threshold", spec.error_threshold)
        if not 1 <= spec.max_attempts <= 10:
            raise InvalidInput("max_attempts must be 1..10")
        if not 60 <= spec.install_seconds <= 4 * 3600:
            raise InvalidInput("install_seconds must be 60..14400")
        model = await self.session.get(DeviceModel, spec.model_id)
        if model is None:
            raise NotFound(f"device model {spec.model_id} not found")
        if not model.profile_key:
            raise InvalidInput(f"device model {spec.model_id} has no firmware profile")
        try:
            profile = load_profile_key(model.profile_key, self.profile_dir)
        except Exception as err:  # a profile error names its file and key path
            raise InvalidInput(f"profile {model.profile_key}: {err}") from err
        try:
            profile.version(spec.target_version)
        except KeyError as err:
            known = ", ".join(v.version for v in profile.versions)
            raise InvalidInput(
                f"version {spec.target_version} is not in profile {model.profile_key} (it lists {known})"
            ) from err
        art = (
            await self.session.execute(
                select(FirmwareArtifact).where(
                    FirmwareArtifact.profile_key == model.profile_key,
                    FirmwareArtifact.version == spec.target_version,
                )
            )
        ).scalar_one_or_none()
        if art is None:
            raise InvalidInput(
                f"no artifact for {model.profile_key} {spec.target_version}; run "
                f"`labfleet artifacts import` first"
            )
        schools = tuple(sorted(set(spec.school_ids)))
        if not self.principal.district_wide:
            if not schools:
                schools = tuple(sorted(self.principal.school_ids))
            if not set(schools) <= self.principal.school_ids:
                raise NotFound("school not found")
        for sid in schools:
            if await self.session.get(School, sid) is None:
                raise NotFound(f"school {sid} not found")
        for rid in spec.room_ids:
            room = await self.session.get(Room, rid)
            if (
                room is None
                or not self.principal.sees_school(room.school_id)
                or (schools and room.school_id not in schools)
            ):
                raise NotFound(f"room {rid} not found")
        policy = dict(
            DEFAULT_POLICY,
            download_window=spec.download_window.value,
            install_window=spec.install_window.value,
            install_seconds=spec.install_seconds,
        )
        plan = {
            "canary_size": spec.plan.canary_size,
            "canary_percent": spec.plan.canary_percent,
            "strategy": spec.plan.strategy.value,
            "percents": list(spec.plan.percents),
        }
        r = Rollout(
            name=spec.name,
            model_id=model.id,
            profile_key=model.profile_key,
            target_version=spec.target_version,
            artifact_sha256=art.sha256,
            school_ids=list(schools),
            room_ids=sorted(set(spec.room_ids)),
            from_versions=sorted(set(spec.from_versions)),
            group_plan=plan,
            success_threshold=spec.success_threshold,
            error_threshold=spec.error_threshold,
            max_attempts=spec.max_attempts,
            policy=policy,
            state=RolloutStatus.DRAFT.value,
            current_group=0,
            created_by=self.principal.actor,
            created_at=self.now,
            updated_at=self.now,
        )
        self.session.add(r)
        await self.session.flush()
        audit.record(
            self.session,
            principal=self.principal,
            at=self.now,
            action="rollout.create",
            object_type="rollout",
            object_id=r.id,
            school_id=schools[0] if len(schools) == 1 else None,
            after={
                "name": r.name,
                "model": r.profile_key,
                "target_version": r.target_version,
                "schools": list(schools),
                "rooms": r.room_ids,
                "plan": plan,
                "success_threshold": r.success_threshold,
                "error_threshold": r.error_threshold,
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
        before = _snap(r)
        matching = await _matching_devices(self.session, r)
        plan = _plan_of(r)
        groups = plan_groups([(d.id, d.school_id) for d, _ in matching], plan) or []
        if not groups:
            groups = [PlannedGroup("canary", "canary", ())]
        by_id = {d.id: (d, v) for d, v in matching}
        codes = await _school_codes(self.session, [g.school_id for g in groups if g.school_id is not None])
        for pos, g in enumerate(groups):
            name = f"school {codes.get(g.school_id, g.school_id)}" if g.school_id is not None else g.name
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
                _add_device(self.session, r, row, dev, version, self.now)
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
            after=_snap(r),
            summary=f"{len(matching)} devices in {len(groups)} groups",
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
        forgiven = {str(gid): t.failed for gid, t in (await _tallies(self.session, r.id)).items()}
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
        before = _snap(r)
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
            after=_snap(r),
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


def _plan_of(r: Rollout) -> GroupPlan:
    p = r.group_plan or {}
    return GroupPlan(
        canary_size=int(p.get("canary_size", 1)),
        canary_percent=p.get("canary_percent"),
        strategy=GroupStrategy(p.get("strategy", GroupStrategy.PER_SCHOOL.value)),
        percents=tuple(p.get("percents", (25.0, 50.0, 100.0))),
    )


async def _matching_devices(
    session: AsyncSession, r: Rollout, exclude: set[int] | None = None
) -> list[tuple[Device, str | None]]:
    """Devices the rollout's targets select now, with their reported firmware version."""
    stmt = (
        select(Device, DeviceState.firmware_version)
        .outerjoin(DeviceState, DeviceState.device_id == Device.id)
        .where(Device.model_id == r.model_id, Device.status.in_(UPDATABLE_STATUSES))
    )
    if r.school_ids:
        stmt = stmt.where(Device.school_id.in_(r.school_ids))
    if r.room_ids:
        stmt = stmt.where(Device.room_id.in_(r.room_ids))
    out = []
    for dev, version in (await session.execute(stmt.order_by(Device.id))).all():
        if exclude and dev.id in exclude:
            continue
        if version == r.target_version:
            continue  # already there
        if r.from_versions and version not in r.from_versions:
            continue
        out.append((dev, version))
    return out


def _add_device(
    session: AsyncSession, r: Rollout, g: RolloutGroup, dev: Device, version: str | None, now: datetime
) -> RolloutDevice:
    rd = RolloutDevice(
        rollout_id=r.id,
        group_id=g.id,
        device_id=dev.id,
        school_id=dev.school_id,
        room_id=dev.room_id,
        state=DeviceUpdateState.PENDING.value,
        from_version=version,
        to_version=r.target_version,
        attempts=0,
        bytes_done=0,
        created_at=now,
        updated_at=now,
    )
    session.add(rd)
    session.add(
        RolloutDeviceEvent(
            rollout_id=r.id, device_id=dev.id, at=now, event="pending", detail=f"group {g.name}"
        )
    )
    return rd


async def cancel_unfinished(
    session: AsyncSession,
    r: Rollout,
    now: datetime,
    queue: list[tuple[DeviceTarget, wire.Command]] | None,
    metrics: Any = None,
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
    targets = await _targets(session, [rd.device_id for rd in rows if rd.state != DeviceUpdateState.PENDING])
    for rd in rows:
        had_work = rd.state != DeviceUpdateState.PENDING
        _set_state(session, r, rd, DeviceUpdateState.CANCELLED, now, "rollout aborted", metrics)
        if had_work and rd.device_id in targets:
            if queue is None:
                # No engine in this process (the CLI): the service's engine sends it on its next step.
                session.add(
                    RolloutDeviceEvent(
                        rollout_id=r.id, device_id=rd.device_id, at=now, event="cancel_pending"
                    )
                )
                continue
            cmd = _command(Phase.CANCEL, r, rd, now, size=0)
            queue.append((targets[rd.device_id], cmd))
            session.add(
                RolloutDeviceEvent(rollout_id=r.id, device_id=rd.device_id, at=now, event="cancel_sent")
            )
    for g in (await session.execute(select(RolloutGroup).where(RolloutGroup.rollout_id == r.id))).scalars():
        if g.state in ("pending", "running"):
            g.state = "cancelled"
            g.finished_at = now
    return len(rows)


async def _school_codes(session: AsyncSession, school_ids: Sequence[int]) -> dict[int, str]:
    """School codes by id: groups are named for people ("school north-primary", not "school 3")."""
    if not school_ids:
        return {}
    rows = (
        await session.execute(select(School.id, School.code).where(School.id.in_(sorted(set(school_ids)))))
    ).all()
    return {i: code for i, code in rows}


async def _targets(session: AsyncSession, device_ids: Sequence[int]) -> dict[int, DeviceTarget]:
    if not device_ids:
        return {}
    rows = (
        await session.execute(
            select(
                Device.id,
                Device.serial_number,
                School.code,
                DeviceModel.transport,
                DeviceCredential.username,
                DeviceState.online,
            )
            .join(School, School.id == Device.school_id)
            .join(DeviceModel, DeviceModel.id == Device.model_id)
            .outerjoin(DeviceCredential, DeviceCredential.device_id == Device.id)
            .outerjoin(DeviceState, DeviceState.device_id == Device.id)
            .where(Device.id.in_(list(device_ids)))
        )
    ).all()
    return {
        i: DeviceTarget(i, user or serial, code, transport, online)
        for i, serial, code, transport, user, online in rows
    }


def _command(
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


def _set_state(
    session: AsyncSession,
    r: Rollout,
    rd: RolloutDevice,
    state: DeviceUpdateState,
    now: datetime,
    detail: str | None,
    metrics: Any = None,
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


# --- the engine --------------------------------------------------------------------------------------------


class RolloutEngine:
    """Drives running rollouts. `step(now)` is one deterministic tick; `on_progress` takes a device report.

    Commands are queued during the transaction and sent after it commits, so a device's answer always finds
    the state that asked for it.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: RolloutSettings,
        sender: UpdateSender | None,
        *,
        edge: EdgeFlasher | None = None,
        metrics: Any = None,
        base_url: str = "",
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.sender = sender
        self.edge = edge
        self.metrics = metrics
        self.base_url = base_url.rstrip("/")

    async def step(self, now: datetime) -> StepReport:
        report = StepReport()
        queue: list[tuple[DeviceTarget, wire.Command]] = []
        async with self.sessions() as session:
            rollouts = (
                (
                    await session.execute(
                        select(Rollout)
                        .where(Rollout.state.in_([RolloutStatus.RUNNING.value, RolloutStatus.PAUSED.value]))
                        .order_by(Rollout.id)
                    )
                )
                .scalars()
                .all()
            )
            ctx = _StepContext(session, now, self.settings)
            await ctx.prepare()
            await self._flush_cancels(session, now, queue)
            for r in rollouts:
                await self._include_new_devices(session, r, now)
                await self._stalls(session, r, now)
                if r.state == RolloutStatus.RUNNING:
                    await self._advance(session, r, now, report)
                if r.state == RolloutStatus.RUNNING:
                    await self._schedule(ctx, r, now, queue, report)
            await session.commit()
        for target, cmd in queue:
            await self._send(target, cmd)
        report.commands = len(queue)
        return report

    async def abort(self, principal: Principal, rollout_id: int, now: datetime) -> Rollout:
        """Abort through the engine, so cancel commands reach devices that hold partial downloads."""
        queue: list[tuple[DeviceTarget, wire.Command]] = []
        async with self.sessions() as session:
            r = await RolloutService(session, principal, now).abort(rollout_id, queue)
            await session.commit()
        for target, cmd in queue:
            await self._send(target, cmd)
        return r

    async def _flush_cancels(
        self, session: AsyncSession, now: datetime, queue: list[tuple[DeviceTarget, wire.Command]]
    ) -> None:
        """Send the cancel commands of rollouts aborted where no engine runs (the CLI)."""
        recent = now - CANCEL_FLUSH_HORIZON
        pending = (
            (
                await session.execute(
                    select(RolloutDeviceEvent)
                    .join(Rollout, Rollout.id == RolloutDeviceEvent.rollout_id)
                    .where(
                        Rollout.state == RolloutStatus.ABORTED.value,
                        Rollout.finished_at >= recent,
                        RolloutDeviceEvent.event == "cancel_pending",
                    )
                )
            )
            .scalars()
            .all()
        )
        if not pending:
            return
        sent = set(
            (
                await session.execute(
                    select(RolloutDeviceEvent.rollout_id, RolloutDeviceEvent.device_id).where(
                        RolloutDeviceEvent.event == "cancel_sent", RolloutDeviceEvent.at >= recent
                    )
                )
            ).all()
        )
        todo = [e for e in pending if (e.rollout_id, e.device_id) not in sent]
        targets = await _targets(session, [e.device_id for e in todo])
        for e in todo:
            r = await session.get(Rollout, e.rollout_id)
            rd = (
                await session.execute(
                    select(RolloutDevice).where(
                        RolloutDevice.rollout_id == e.rollout_id, RolloutDevice.device_id == e.device_id
                    )
                )
            ).scalar_one()
            if r is None or e.device_id not in targets:
                continue
            queue.append((targets[e.device_id], _command(Phase.CANCEL, r, rd, now, size=0)))
            session.add(
                RolloutDeviceEvent(rollout_id=r.id, device_id=e.device_id, at=now, event="cancel_sent")
            )

    async def _send(self, target: DeviceTarget, cmd: wire.Command) -> None:
        link = self.edge if target.transport == Transport.SERIAL else self.sender
        if link is None:
            return
        try:
            await link.send(target, cmd)
        except Exception:  # a send failure is a stalled attempt: the stall check retries it
            log.warning("update command to device %d could not be sent", target.device_id, exc_info=True)

    # -- membership: devices enrolled after the start ---------------------------------------------------
    async def _include_new_devices(self, session: AsyncSession, r: Rollout, now: datetime) -> None:
        known = set(
            (
                await session.execute(select(RolloutDevice.device_id).where(RolloutDevice.rollout_id == r.id))
            ).scalars()
        )
        fresh = await _matching_devices(session, r, exclude=known)
        if not fresh:
            return
        groups = list(
            (
                await session.execute(
                    select(RolloutGroup)
                    .where(RolloutGroup.rollout_id == r.id)
                    .order_by(RolloutGroup.position)
                )
            ).scalars()
        )
        plan = _plan_of(r)
        for dev, version in fresh:
            target = None
            if plan.strategy == GroupStrategy.PER_SCHOOL:
                target = next(
                    (g for g in groups if g.kind == "school" and g.school_id == dev.school_id), None
                )
                if target is None:
                    code = (await _school_codes(session, [dev.school_id])).get(dev.school_id, dev.school_id)
                    target = RolloutGroup(
                        rollout_id=r.id,
                        position=len(groups),
                        name=f"school {code}",
                        kind="school",
                        school_id=dev.school_id,
                        state="pending",
                    )
                    session.add(target)
                    await session.flush()
                    groups.append(target)
            else:
                target = groups[-1]
            _add_device(session, r, target, dev, version, now)
            log.info("rollout %d: device %d joined group %s after the start", r.id, dev.id, target.name)
        await session.flush()

    # -- failures without a report ------------------------------------------------------------------------
    async def _stalls(self, session: AsyncSession, r: Rollout, now: datetime) -> None:
        stall = timedelta(seconds=int(r.policy.get("stall_seconds", DEFAULT_POLICY["stall_seconds"])))
        rows = (
            (
                await session.execute(
                    select(RolloutDevice).where(
                        RolloutDevice.rollout_id == r.id,
                        RolloutDevice.updated_at < now - stall,
                        RolloutDevice.state.in_(
                            [
                                DeviceUpdateState.SCHEDULED.value,
                                DeviceUpdateState.DOWNLOADING.value,
                                DeviceUpdateState.INSTALLING.value,
                            ]
                        ),
                    )
                )
            )
            .scalars()
            .all()
        )
        for rd in rows:
            self._fail(
                session, r, rd, now, f"no progress report for {int(stall.total_seconds())} s", retryable=True
            )

    def _fail(
        self,
        session: AsyncSession,
        r: Rollout,
        rd: RolloutDevice,
        now: datetime,
        reason: str,
        *,
        retryable: bool,
        final_state: DeviceUpdateState = DeviceUpdateState.FAILED,
    ) -> None:
        rd.attempts += 1
        rd.reason = reason
        if retryable and rd.attempts < r.max_attempts:
            backoff = min(RETRY_CAP, RETRY_BASE * (2 ** (rd.attempts - 1)))
            rd.next_attempt_at = now + backoff
            _set_state(
                session, r, rd, DeviceUpdateState.PENDING, now, reason, self.metrics, event="retry_wait"
            )
            return
        _set_state(session, r, rd, final_state, now, reason, self.metrics)

    # -- thresholds -----------------------------------------------------------------------------------------
    async def _advance(self, session: AsyncSession, r: Rollout, now: datetime, report: StepReport) -> None:
        groups = list(
            (
                await session.execute(
                    select(RolloutGroup)
                    .where(RolloutGroup.rollout_id == r.id)
                    .order_by(RolloutGroup.position)
                )
            ).scalars()
        )
        tallies = await _tallies(session, r.id, r.policy.get("forgiven_failures"))
        for g in groups:
            if g.position > r.current_group:
                break
            verdict = judge_group(
                tallies.get(g.id, GroupTally(0, 0, 0, 0)), r.success_threshold, r.error_threshold
            )
            if verdict == GroupVerdict.PAUSE:
                t = tallies[g.id]
                r.state = RolloutStatus.PAUSED.value
                r.state_reason = (
                    f"error threshold: {t.failed} of {t.total} devices failed in group {g.name} "
                    f"(threshold {r.error_threshold:.0%})"
                )
                r.paused_at = now
                r.updated_at = now
                audit.record(
                    session,
                    principal=SYSTEM,
                    at=now,
                    action="rollout.pause",
                    object_type="rollout",
                    object_id=r.id,
                    after=_snap(r),
                    summary=r.state_reason,
                )
                if self.metrics is not None:
                    self.metrics.rollout_paused("error_threshold")
                log.warning("rollout %d paused: %s", r.id, r.state_reason)
                report.paused.append(r.id)
                return
        while True:
            cur = next((g for g in groups if g.position == r.current_group), None)
            if cur is None:
                break
            t = tallies.get(cur.id, GroupTally(0, 0, 0, 0))
            verdict = judge_group(t, r.success_threshold, r.error_threshold)
            if t.in_flight == 0 and cur.state == "running":
                cur.state = "succeeded" if verdict == GroupVerdict.ADVANCE else cur.state
                cur.finished_at = now if cur.state == "succeeded" else None
            if verdict != GroupVerdict.ADVANCE:
                break
            nxt = next((g for g in groups if g.position == r.current_group + 1), None)
            if nxt is None:
                break
            r.current_group += 1
            nxt.state = "running"
            nxt.started_at = now
            r.updated_at = now
            audit.record(
                session,
                principal=SYSTEM,
                at=now,
                action="rollout.group_start",
                object_type="rollout",
                object_id=r.id,
                after={"group": nxt.name, "position": nxt.position},
                summary=f"group {cur.name}: {t.succeeded} of {t.total} succeeded",
            )
            log.info(
                "rollout %d: group %s reached its success threshold; starting %s", r.id, cur.name, nxt.name
            )
        if r.current_group >= len(groups) - 1:
            unfinished = sum(t.in_flight for t in tallies.values())
            if unfinished == 0:
                for g in groups:
                    if g.state in ("running", "pending"):
                        g.state = "succeeded"
                        g.finished_at = now
                r.state = RolloutStatus.COMPLETED.value
                r.finished_at = now
                r.updated_at = now
                audit.record(
                    session,
                    principal=SYSTEM,
                    at=now,
                    action="rollout.complete",
                    object_type="rollout",
                    object_id=r.id,
                    after=_snap(r),
                )
                log.info("rollout %d completed", r.id)
                report.completed.append(r.id)

    # -- scheduling: timetable, windows, caps ---------------------------------------------------------------
    async def _schedule(
        self,
        ctx: _StepContext,
        r: Rollout,
        now: datetime,
        queue: list[tuple[DeviceTarget, wire.Command]],
        report: StepReport,
    ) -> None:
        session = ctx.session
        started = [
            g.id
            for g in (
                await session.execute(
                    select(RolloutGroup).where(
                        RolloutGroup.rollout_id == r.id, RolloutGroup.position <= r.current_group
                    )
                )
            ).scalars()
        ]
        rows = (
            (
                await session.execute(
                    select(RolloutDevice)
                    .where(
                        RolloutDevice.rollout_id == r.id,
                        RolloutDevice.group_id.in_(started or [-1]),
                        RolloutDevice.state.in_(
                            [DeviceUpdateState.PENDING.value, DeviceUpdateState.DOWNLOADED.value]
                        ),
                    )
                    .order_by(RolloutDevice.id)
                )
            )
            .scalars()
            .all()
        )
        if not rows:
            return
        art = (
            await session.execute(
                select(FirmwareArtifact).where(FirmwareArtifact.sha256 == r.artifact_sha256)
            )
        ).scalar_one()
        targets = await _targets(session, [rd.device_id for rd in rows])
        download_mode = Window(r.policy.get("download_window", Window.OUTSIDE_LESSONS.value))
        install_mode = Window(r.policy.get("install_window", Window.OUTSIDE_LESSONS.value))
        install_s = float(r.policy.get("install_seconds", DEFAULT_POLICY["install_seconds"]))
        min_dl_s = float(r.policy.get("min_download_seconds", DEFAULT_POLICY["min_download_seconds"]))
        for rd in rows:
            target = targets.get(rd.device_id)
            if target is None:
                continue
            if target.transport == Transport.SERIAL and (self.edge is None or not target.online):
                report.waiting["no_edge_agent"] += 1
                if rd.reason != "waiting for an edge agent":
                    rd.reason = "waiting for an edge agent"
                continue
            school = await ctx.school(rd.school_id)
            if rd.state == DeviceUpdateState.PENDING:
                if rd.next_attempt_at is not None and rd.next_attempt_at > now:
                    report.waiting["retry_backoff"] += 1
                    continue
                # The cap first: it is one dictionary lookup, and a full school needs no timetable question.
                if ctx.slots_used(rd.school_id) >= school.max_concurrent:
                    report.waiting["school_download_cap"] += 1
                    continue
                g = ctx.gate(school, rd.school_id, rd.room_id, download_mode, min_dl_s)
                if not g.open:
                    report.waiting[g.reason] += 1
                    continue
                ctx.take_slot(rd.school_id)
                rate = max(1, school.budget // school.max_concurrent)
                grant = DownloadGrant(
                    r.artifact_sha256,
                    rd.device_id,
                    rd.school_id,
                    int(now.timestamp()) + self.settings.url_ttl_seconds,
                )
                url = self.base_url + download_path(self.settings.url_key, grant)
                cmd = _command(
                    Phase.DOWNLOAD, r, rd, now, size=art.size, url=url, art=art, rate=rate, not_after=g.until
                )
                rd.scheduled_at = now
                rd.next_attempt_at = None
                _set_state(
                    session,
                    r,
                    rd,
                    DeviceUpdateState.SCHEDULED,
                    now,
                    f"download until {g.until.isoformat() if g.until else '-'}",
                    self.metrics,
                )
                queue.append((target, cmd))
            else:  # downloaded: install when the install gate is open
                g = ctx.gate(school, rd.school_id, rd.room_id, install_mode, install_s)
                if not g.open:
                    report.waiting[g.reason] += 1
                    continue
                cmd = _command(Phase.INSTALL, r, rd, now, size=art.size, art=art, not_after=g.until)
                _set_state(
                    session,
                    r,
                    rd,
                    DeviceUpdateState.INSTALLING,
                    now,
                    f"install until {g.until.isoformat() if g.until else '-'}",
                    self.metrics,
                    event="install_sent",
                )
                queue.append((target, cmd))

    # -- device reports ------------------------------------------------------------------------------------
    async def on_progress(self, device_id: int, p: UpdateProgress, now: datetime) -> bool:
        """Apply one progress report; False when it is stale or unknown (answered by a later command)."""
        async with self.sessions() as session:
            rd = (
                await session.execute(
                    select(RolloutDevice).where(
                        RolloutDevice.device_id == device_id, RolloutDevice.correlation_id == p.id
                    )
                )
            ).scalar_one_or_none()
            if rd is None:
                return False
            r = await session.get(Rollout, rd.rollout_id)
            assert r is not None
            ok = self._apply(session, r, rd, p, now)
            await session.commit()
            return ok

    def _apply(
        self, session: AsyncSession, r: Rollout, rd: RolloutDevice, p: UpdateProgress, now: datetime
    ) -> bool:
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
            _set_state(
                session,
                r,
                rd,
                DeviceUpdateState.DOWNLOADING,
                now,
                f"from byte {p.offset or 0}",
                self.metrics,
                event="download_resumed" if resumed else "download_started",
            )
        elif p.state == Progress.DOWNLOAD_PAUSED:
            rd.bytes_done = p.offset or rd.bytes_done
            _set_state(
                session,
                r,
                rd,
                DeviceUpdateState.PENDING,
                now,
                f"window closed at byte {rd.bytes_done}",
                self.metrics,
                event="download_paused",
            )
        elif p.state == Progress.DOWNLOADED:
            rd.bytes_done = p.size or rd.bytes_done
            _set_state(session, r, rd, DeviceUpdateState.DOWNLOADED, now, "verified and staged", self.metrics)
        elif p.state in (
            Progress.DOWNLOAD_FAILED,
            Progress.VERIFY_FAILED,
            Progress.INSTALL_FAILED,
            Progress.REFUSED,
        ):
            self._fail(session, r, rd, now, f"{p.state.value}: {detail or 'no reason given'}", retryable=True)
        elif p.state == Progress.INSTALLING:
            rd.install_started_at = now
            session.add(
                RolloutDeviceEvent(rollout_id=r.id, device_id=rd.device_id, at=now, event="install_started")
            )
        elif p.state == Progress.REBOOTING:
            session.add(
                RolloutDeviceEvent(rollout_id=r.id, device_id=rd.device_id, at=now, event="rebooting")
            )
        elif p.state == Progress.SUCCEEDED:
            rd.reported_version = p.version
            if p.version and p.version != r.target_version:
                self._fail(
                    session,
                    r,
                    rd,
                    now,
                    f"reported version {p.version}, expected {r.target_version}",
                    retryable=False,
                )
            else:
                _set_state(
                    session, r, rd, DeviceUpdateState.SUCCEEDED, now, f"running {p.version}", self.metrics
                )
        elif p.state == Progress.ROLLED_BACK:
            rd.reported_version = p.version
            # A version that failed to boot is not retried on that device: the error threshold decides.
            self._fail(
                session,
                r,
                rd,
                now,
                f"rolled back to {p.version}: {detail or 'boot failed'}",
                retryable=False,
                final_state=DeviceUpdateState.ROLLED_BACK,
            )
        elif p.state == Progress.CANCELLED:
            _set_state(session, r, rd, DeviceUpdateState.CANCELLED, now, detail or "cancelled", self.metrics)
        return True


async def _tallies(
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


@dataclass(slots=True)
class _School:
    timetable: SchoolTimetable
    budget: int  # bytes per second
    max_concurrent: int


class _StepContext:
    """Per-step caches: school timetables and policies, and download slots in use per school."""

    def __init__(self, session: AsyncSession, now: datetime, settings: RolloutSettings) -> None:
        self.session = session
        self.now = now
        self.settings = settings
        self._schools: dict[int, _School] = {}
        self._slots: dict[int, int] | None = None
        self._gates: dict[tuple[int, int | None, Window, float], Gate] = {}

    async def school(self, school_id: int) -> _School:
        if school_id not in self._schools:
            school = await self.session.get(School, school_id)
            assert school is not None
            periods, calendar = await load_school_timetable(self.session, school_id)
            pol = await self.session.get(SchoolUpdatePolicy, school_id)
            windows = parse_windows(pol.windows) if pol and pol.windows else ()
            share = pol.uplink_share if pol and pol.uplink_share else self.settings.default_uplink_share
            cap = pol.max_bytes_per_second if pol else None
            conc = (
                pol.max_concurrent_downloads
                if pol and pol.max_concurrent_downloads
                else self.settings.default_max_concurrent_downloads
            )
            self._schools[school_id] = _School(
                SchoolTimetable(school.timezone, tuple(periods), tuple(calendar), windows),
                school_budget_bytes_per_second(school.uplink_mbps, share, cap),
                max(1, conc),
            )
        return self._schools[school_id]

    async def _load_slots(self) -> dict[int, int]:
        rows = (
            await self.session.execute(
                select(RolloutDevice.school_id, func.count())
                .join(Rollout, Rollout.id == RolloutDevice.rollout_id)
                .where(RolloutDevice.state.in_([s.value for s in DOWNLOAD_SLOT_STATES]))
                .group_by(RolloutDevice.school_id)
            )
        ).all()
        return {sid: n for sid, n in rows}

    def slots_used(self, school_id: int) -> int:
        assert self._slots is not None
        return self._slots.get(school_id, 0)

    def take_slot(self, school_id: int) -> None:
        assert self._slots is not None
        self._slots[school_id] = self._slots.get(school_id, 0) + 1

    def gate(
        self, school: _School, school_id: int, room_id: int | None, mode: Window, min_seconds: float
    ) -> Gate:
        """The timetable gate, asked once per room and phase per step (rooms hold ~30 devices each)."""
        key = (school_id, room_id, mode, min_seconds)
        if key not in self._gates:
            self._gates[key] = gate(school.timetable, room_id, self.now, mode, min_seconds)
        return self._gates[key]

    async def prepare(self) -> None:
        self._slots = await self._load_slots()


async def school_budget(session: AsyncSession, settings: RolloutSettings, school_id: int) -> int:
    """The byte rate updates may use at one school (the artifact server's token-bucket rate)."""
    ctx = _StepContext(session, datetime.now().astimezone(), settings)
    return (await ctx.school(school_id)).budget


async def rollout_states(session: AsyncSession) -> tuple[Any, ...]:
    """Rollouts for the metrics snapshot: every rollout's status, and devices per state for active ones."""
    from fleet.observability.metrics import RolloutState

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
