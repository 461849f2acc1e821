"""The rollout engine: the job that drives running rollouts. `RolloutEngine.step(now)` plans, gates and sends
commands; `RolloutEngine.on_progress` takes device reports. Each call is its own transaction (it commits).

The engine is deterministic for a given database and `now`, so tests drive it on a fast clock.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.domain import wire
from fleet.domain.enums import Transport
from fleet.domain.permissions import SYSTEM, Principal
from fleet.domain.rollouts import (
    DOWNLOAD_SLOT_STATES,
    DeviceUpdateState,
    Gate,
    GroupStrategy,
    GroupTally,
    GroupVerdict,
    RolloutStatus,
    Window,
    gate,
    judge_group,
)
from fleet.domain.update_wire import Phase, UpdateProgress
from fleet.observability.metrics import FleetMetrics
from fleet.persistence.models_rollouts import (
    FirmwareArtifact,
    Rollout,
    RolloutDevice,
    RolloutDeviceEvent,
    RolloutGroup,
)
from fleet.services import audit
from fleet.services.artifacts import DownloadGrant, download_path
from fleet.services.rollout_devices import (
    apply_progress,
    fail_attempt,
    group_tallies,
    set_device_state,
    update_command,
)
from fleet.services.rollout_policy import DEFAULT_POLICY, SchoolLimits, load_school_limits
from fleet.services.rollout_targets import (
    DeviceTarget,
    add_device,
    device_targets,
    matching_devices,
    plan_of,
    school_codes,
)
from fleet.services.rollouts import RolloutService, rollout_snapshot
from fleet.settings import RolloutSettings

log = logging.getLogger(__name__)

# Aborts from the CLI are told to devices by the service's engine for this long afterwards (a day covers a
# service restart overnight; devices that stay silent longer have dropped their partial image by TTL anyway).
CANCEL_FLUSH_HORIZON = timedelta(days=1)


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


@dataclass(slots=True)
class StepReport:
    commands: int = 0
    paused: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    waiting: Counter[str] = field(default_factory=Counter)


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
        metrics: FleetMetrics | None = None,
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
            ctx = StepContext(session, now, self.settings)
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
        targets = await device_targets(session, [e.device_id for e in todo])
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
            queue.append((targets[e.device_id], update_command(Phase.CANCEL, r, rd, now, size=0)))
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
        fresh = await matching_devices(session, r, exclude=known)
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
        plan = plan_of(r)
        for dev, version in fresh:
            target = None
            if plan.strategy == GroupStrategy.PER_SCHOOL:
                target = next(
                    (g for g in groups if g.kind == "school" and g.school_id == dev.school_id), None
                )
                if target is None:
                    code = (await school_codes(session, [dev.school_id])).get(dev.school_id, dev.school_id)
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
            add_device(session, r, target, dev, version, now)
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
            fail_attempt(
                session,
                r,
                rd,
                now,
                f"no progress report for {int(stall.total_seconds())} s",
                retryable=True,
                metrics=self.metrics,
            )

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
        tallies = await group_tallies(session, r.id, r.policy.get("forgiven_failures"))
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
                    after=rollout_snapshot(r),
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
                    after=rollout_snapshot(r),
                )
                log.info("rollout %d completed", r.id)
                report.completed.append(r.id)

    # -- scheduling: timetable, windows, caps ---------------------------------------------------------------
    async def _schedule(
        self,
        ctx: StepContext,
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
        targets = await device_targets(session, [rd.device_id for rd in rows])
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
                # The school's budget, and the rollout's own cap on top, shared by its download slots.
                budget = min(school.budget, int(r.policy.get("max_bytes_per_second") or school.budget))
                rate = max(1, budget // school.max_concurrent)
                grant = DownloadGrant(
                    r.artifact_sha256,
                    rd.device_id,
                    rd.school_id,
                    int(now.timestamp()) + self.settings.url_ttl_seconds,
                )
                url = self.base_url + download_path(self.settings.url_key, grant)
                cmd = update_command(
                    Phase.DOWNLOAD, r, rd, now, size=art.size, url=url, art=art, rate=rate, not_after=g.until
                )
                rd.scheduled_at = now
                rd.next_attempt_at = None
                set_device_state(
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
                cmd = update_command(Phase.INSTALL, r, rd, now, size=art.size, art=art, not_after=g.until)
                set_device_state(
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
            ok = apply_progress(session, r, rd, p, now, self.metrics)
            await session.commit()
            return ok


class StepContext:
    """Per-step caches: school timetables and policies, and download slots in use per school."""

    def __init__(self, session: AsyncSession, now: datetime, settings: RolloutSettings) -> None:
        self.session = session
        self.now = now
        self.settings = settings
        self._schools: dict[int, SchoolLimits] = {}
        self._slots: dict[int, int] | None = None
        self._gates: dict[tuple[int, int | None, Window, float], Gate] = {}

    async def school(self, school_id: int) -> SchoolLimits:
        if school_id not in self._schools:
            self._schools[school_id] = await load_school_limits(self.session, self.settings, school_id)
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
        self, school: SchoolLimits, school_id: int, room_id: int | None, mode: Window, min_seconds: float
    ) -> Gate:
        """The timetable gate, asked once per room and phase per step (rooms hold ~30 devices each)."""
        key = (school_id, room_id, mode, min_seconds)
        if key not in self._gates:
            self._gates[key] = gate(school.timetable, room_id, self.now, mode, min_seconds)
        return self._gates[key]

    async def prepare(self) -> None:
        self._slots = await self._load_slots()
