"""The MQTT device plane as one runtime object: broker, ingest, presence sweep, command delivery, snapshot.

`DevicePlane` is an async context manager built from settings, a session factory and a clock; the app's
lifespan enters it and exits it in reverse. Every background task is named and owned here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import Counter
from datetime import datetime
from typing import Any, Self

import aiomqtt
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.domain import wire
from fleet.domain.clock import Clock, as_utc
from fleet.persistence import ingest_repo, ingest_rows
from fleet.persistence.directory import DeviceDirectory, ReferenceWatch
from fleet.persistence.models import School
from fleet.persistence.models_mqtt import Alert, DeviceCommand, DeviceState, UsageConcurrency
from fleet.persistence.timetables import Timetables
from fleet.runtime.brokers import broker_from_settings
from fleet.runtime.ingest import IngestService
from fleet.runtime.mqtt_subscriber import BrokerAddress
from fleet.runtime.refused_connects import FLUSH_INTERVAL_S
from fleet.runtime.state import FleetState, Stage, stage
from fleet.runtime.supervise import Backoff, Retry, TaskOwner, every, reconnecting
from fleet.services import credential_rotation
from fleet.settings import Settings

logger = logging.getLogger(__name__)

# Presence sweep: the heartbeat backstop needs only ~timeout/10 resolution (18 s at the default 180 s).
SWEEP_INTERVAL_S = 15.0
# Command delivery: a device that just came online gets its queued commands within a second.
DISPATCH_INTERVAL_S = 1.0
# The metrics snapshot and lesson-concurrency roll-up; Prometheus scrapes every 15-30 s.
SNAPSHOT_INTERVAL_S = 15.0
# The command publisher's reconnect backoff: the broker is usually local and back within ~1 s of a restart,
# so start at 0.5 s; the 30 s cap keeps a long outage from costing more than a connect attempt per 30 s.
DISPATCH_BACKOFF_START_S = 0.5
DISPATCH_BACKOFF_CAP_S = 30.0
# Commands published per dispatch pass: a school-wide batch goes out over a few passes, not in one burst.
DISPATCH_BATCH = 500
# Credential changes arriving within this window share one broker sync: at the 08:00 bell hundreds of
# terminals enroll per second, and a mosquitto sync rewrites the whole password file and sends SIGHUP.
SYNC_COALESCE_S = 0.2
# Credential rotations are settled this often: a device's old password stops within ~1 s of its ack.
ROTATION_SETTLE_INTERVAL_S = 1.0


class CoalescedSync:
    """Runs `fn` once for all callers that arrive within `delay`; every caller waits for that run."""

    def __init__(self, fn: Any, delay: float = SYNC_COALESCE_S) -> None:
        self._fn = fn
        self._delay = delay
        self._next: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def __call__(self) -> None:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run(self._next), name="credential-sync")
        await asyncio.shield(self._next)

    async def aclose(self) -> None:
        """On the way out: a sync still waiting for its window is dropped (its callers are gone)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, fut: asyncio.Future[None]) -> None:
        await asyncio.sleep(self._delay)
        self._next = None
        try:
            await self._fn()
        except Exception as err:  # noqa: BLE001 - handed to every waiting caller
            fut.set_exception(err)
        else:
            fut.set_result(None)


class DevicePlane:
    """Owns the broker (when managed), one ingest worker, the presence sweeper and the command dispatcher."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        metrics: Any = None,
        snapshot: Any = None,
        run_ingest: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.clock = clock
        self.metrics = metrics
        self.snapshot = snapshot  # fleet.observability.metrics.SnapshotHolder, or None
        self.run_ingest = run_ingest
        self.topics = wire.Topics(settings.mqtt.topic_prefix)
        self.directory = DeviceDirectory(sessions, clock)
        self.timetables = Timetables(sessions)
        self.watch = ReferenceWatch(sessions, self.directory, self.timetables)
        self.broker: Any = None
        self.ingest: IngestService | None = None
        self.address: BrokerAddress | None = None
        self._stack = contextlib.AsyncExitStack()
        self._tasks = TaskOwner(logger)
        self._rng = rng  # the command publisher's backoff jitter (injectable for tests)
        self._dispatch_wake = asyncio.Event()
        self._publisher: aiomqtt.Client | None = None
        self.online: dict[int, bool] = {}
        self.health: dict[int, str] = {}
        self.firmware: dict[int, str | None] = {}
        self.sessions_active: dict[int, bool] = {}
        self._kicks: set[str] = set()
        self._sync = CoalescedSync(self._sync_broker)

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _start(self) -> None:
        broker = broker_from_settings(self.settings, self.sessions)
        if broker is not None:
            self.broker = await self._stack.enter_async_context(broker)
            self.address = broker.address
            self._stack.push_async_callback(self._sync.aclose)  # after the tasks stop, before the broker
        await self.watch.load()
        await self._load_board()
        # Devices moved, rooms or timetables changed by anyone (another process, an import, SQL): reloaded
        # here within REFERENCE_POLL_S; changes through this process's API are applied right after their
        # commit.
        self._spawn(self.watch.run(), "plane-reference-watch")
        if getattr(self.broker, "authority", None) is not None:
            # Revoked devices still trying to connect, counted by the broker's auth check: written once a
            # minute, and once more on the way out (this callback runs after the tasks below have stopped).
            self._stack.push_async_callback(self.flush_refused_connects)
            self._spawn(
                every(
                    FLUSH_INTERVAL_S,
                    self.flush_refused_connects,
                    Retry("refused-connect counts", logger),
                    first_delay=FLUSH_INTERVAL_S,
                ),
                "plane-refused-connects",
            )
        self._stack.push_async_callback(self._tasks.aclose)
        if self.address is None:
            return  # broker "none": HTTP only
        # amqtt has no $share; elsewhere the settings decide (see MqttSettings.ingest_shared).
        shared = self.settings.mqtt.ingest_shared and bool(getattr(self.broker, "shared_subscriptions", True))
        if self.run_ingest and self.settings.mqtt.ingest_in_service:
            self.ingest = IngestService(
                self.settings,
                self.sessions,
                self.clock,
                directory=self.directory,
                timetables=self.timetables,
                watch=self.watch,
                metrics=self.metrics,
                address=self.address,
                client_id=f"labfleet-ingest-{os.getpid()}" if shared else "labfleet-ingest",
                listeners=[self._on_batch],
                shared=shared,
            )
            await self._stack.enter_async_context(self.ingest)
        self._spawn(self._dispatch_loop(), "plane-commands")
        self._spawn(self._sweep_loop(), "plane-presence-sweep")
        self._spawn(self._snapshot_loop(), "plane-snapshot")
        self._spawn(
            every(ROTATION_SETTLE_INTERVAL_S, self.settle_rotations, Retry("credential rotation", logger)),
            "plane-credential-rotation",
        )
        self._stack.push_async_callback(
            self._tasks.aclose
        )  # first out: before the ingest and the broker stop

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def flush_refused_connects(self) -> int:
        """Add the refused CONNECTs counted since the last flush to the devices' credentials."""
        authority = getattr(self.broker, "authority", None)
        if authority is None:
            return 0
        written: int = await authority.refused.flush(self.sessions, self.clock.now())
        return written

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.spawn(coro, name)

    # ------------------------------------------------------------ credentials take effect
    async def credentials_changed(
        self, username: str | None = None, *, revoked: bool = False, rotated: bool = False
    ) -> None:
        """After enrollment, rotation or revocation: reload the broker's view and, on rotation or revocation,
        end the device's live session: it was authenticated with the old password, and a broker checks a
        password at CONNECT only, so without the kick a rotated device kept publishing on its old one."""
        if username:
            self.directory.forget(username)
            await self.directory.load([username])
        if self.broker is not None:
            if (revoked or rotated) and username:
                self._kicks.add(username)
            await self._sync()

    async def settle_rotations(self) -> credential_rotation.Settled:
        """Retire the old passwords of acknowledged or expired rotations and end the sessions opened with
        them; withdraw refused ones (docs/protocol-mqtt.md 8.1)."""
        async with self.sessions() as s:
            done = await credential_rotation.settle(s, self.clock)
            await s.commit()
        for username in done.retired:
            await self.credentials_changed(username, revoked=False, rotated=True)
        for username in done.dropped:
            await self.credentials_changed(username)
        return done

    async def _sync_broker(self) -> None:
        kicks, self._kicks = self._kicks, set()
        await self.broker.sync()
        for username in kicks:
            await self.broker.kick(username)

    async def reference_changed(self) -> None:
        """This process changed devices, rooms, models, schools or timetables: reload now if they moved."""
        await self.watch.check()

    # ------------------------------------------------------------ in-memory board
    async def _load_board(self) -> None:
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(
                        DeviceState.device_id,
                        DeviceState.online,
                        DeviceState.health,
                        DeviceState.firmware_version,
                        DeviceState.session_pseudonym,
                    )
                )
            ).all()
        for dev, online, health, fw, pseud in rows:
            self.online[dev] = bool(online)
            self.health[dev] = health
            self.firmware[dev] = fw
            self.sessions_active[dev] = pseud is not None

    def _on_batch(self, outcome: ingest_repo.BatchOutcome) -> None:
        came_online = False
        for ref, online, _expected, _cause in outcome.presence:
            self.online[ref.device_id] = online
            came_online |= online
        for ref, state in outcome.health:
            self.health[ref.device_id] = state
        for dev, pseud in outcome.sessions.items():
            self.sessions_active[dev] = pseud is not None
        self.firmware.update(outcome.firmware)
        if came_online or outcome.acks or outcome.results:
            self._dispatch_wake.set()

    # ------------------------------------------------------------ presence sweep + concurrency roll-up
    async def sweep_once(self) -> list[tuple[ingest_repo.DeviceRef, bool, bool | None, str]]:
        async with self.sessions() as s:
            changes = await ingest_repo.sweep_heartbeats(
                s,
                now=self.clock.now(),
                timeout_s=self.settings.mqtt.heartbeat_timeout_s,
                refs=self.directory.by_id,
                expected_offline=self.timetables.expected_offline,
            )
            await s.commit()
        for ref, online, expected, _ in changes:
            self.online[ref.device_id] = online
            if self.metrics is not None and expected is False:
                self.metrics.alert_opened("warning")
        return changes

    async def _sweep_loop(self) -> None:
        await every(
            SWEEP_INTERVAL_S, self.sweep_once, Retry("presence sweep", logger), first_delay=SWEEP_INTERVAL_S
        )

    async def rollup_concurrency(self, now: datetime | None = None) -> None:
        """Record the peak of devices online per school during the current lesson period."""
        now = now or self.clock.now()
        online_by_school: Counter[int] = Counter()
        sessions_by_school: Counter[int] = Counter()
        for ref in self.directory.all():
            if self.online.get(ref.device_id):
                online_by_school[ref.school_id] += 1
                if self.sessions_active.get(ref.device_id):
                    sessions_by_school[ref.school_id] += 1
        rows = []
        for school_id in self.timetables.school_ids():
            in_lesson, period = self.timetables.lesson(school_id, None, now)
            if not in_lesson or period is None:
                continue
            rows.append(
                {
                    "school_id": school_id,
                    "day": now.date(),
                    "period": period,
                    "peak_online": online_by_school[school_id],
                    "peak_sessions": sessions_by_school[school_id],
                    "updated_at": now,
                }
            )
        if not rows:
            return
        async with self.sessions() as s:
            t = UsageConcurrency.__table__
            ins = ingest_rows.dialect_insert(s, t)
            await s.execute(
                ins.on_conflict_do_update(
                    index_elements=["school_id", "day", "period"],
                    set_={
                        "peak_online": func.max(t.c.peak_online, ins.excluded.peak_online)
                        if s.get_bind().dialect.name == "sqlite"
                        else func.greatest(t.c.peak_online, ins.excluded.peak_online),
                        "peak_sessions": func.max(t.c.peak_sessions, ins.excluded.peak_sessions)
                        if s.get_bind().dialect.name == "sqlite"
                        else func.greatest(t.c.peak_sessions, ins.excluded.peak_sessions),
                        "updated_at": ins.excluded.updated_at,
                    },
                ),
                rows,
            )
            await s.commit()

    # ------------------------------------------------------------ metrics snapshot
    async def build_snapshot(self) -> Any:
        """The metrics snapshot from in-memory presence and health, through observability's one builder."""
        from zoneinfo import ZoneInfo

        from fleet.observability.state import DeviceView, RoomView, SchoolView, build_snapshot
        from fleet.persistence.models import Room

        async with self.sessions() as s:
            alerts = (
                await s.execute(
                    select(Alert.severity, func.count())
                    .where(Alert.status != "resolved")
                    .group_by(Alert.severity)
                )
            ).all()
            schools = (await s.execute(select(School.id, School.code, School.uplink_mbps))).all()
            from fleet.services.rollouts import rollout_states  # rollouts: state for labfleet_rollout_paused

            rollouts = await rollout_states(s)
            rooms = (await s.execute(select(Room.id, Room.school_id, Room.kind))).all()
        codes = {sid: code for sid, code, _ in schools}
        tt = self.timetables
        school_views = [
            SchoolView(
                code,
                tt._tz.get(sid, ZoneInfo("UTC")),
                float(mbps) * 1e6,
                tuple(tt._periods.get(sid, ())),
                tuple(tt._calendar.get(sid, ())),
            )
            for sid, code, mbps in schools
        ]
        room_views = [RoomView(codes[sid], rid, kind) for rid, sid, kind in rooms if sid in codes]
        device_views = [
            DeviceView(
                codes.get(ref.school_id, ref.school_code),
                ref.room_id,
                ref.device_kind,
                ref.model,
                self.online.get(ref.device_id, False),
                self.health.get(ref.device_id, "unknown"),
                self.firmware.get(ref.device_id),
                self.sessions_active.get(ref.device_id, False),
            )
            for ref in self.directory.all()
            if not ref.revoked
        ]
        return build_snapshot(
            self.clock.now(),
            school_views,
            room_views,
            device_views,
            open_alerts=[(sev, int(n)) for sev, n in alerts],
            rollouts=rollouts,
        )

    async def _snapshot_loop(self) -> None:
        async def step() -> None:
            await self.rollup_concurrency()
            if self.snapshot is not None:
                self.snapshot.publish(await self.build_snapshot())

        # default SNAPSHOT_INTERVAL_S
        await every(
            self.settings.metrics.snapshot_interval_s, step, Retry("snapshot/concurrency roll-up", logger)
        )

    # ------------------------------------------------------------ commands
    def wake_dispatcher(self) -> None:
        self._dispatch_wake.set()

    def broker_links(self) -> dict[str, bool]:
        """The service's own broker links, up or not: the command publisher, and ingest if it runs here."""
        links = {"commands": self._publisher is not None}
        if self.ingest is not None:
            links["ingest"] = self.ingest.connected
        return links

    async def _dispatch_loop(self) -> None:
        assert self.address is not None
        addr = self.address
        retry = Retry(
            "command publisher's broker connection",
            logger,
            Backoff(DISPATCH_BACKOFF_START_S, DISPATCH_BACKOFF_CAP_S, rng=self._rng),
        )

        async def session() -> None:
            try:
                async with aiomqtt.Client(
                    addr.host,
                    addr.port,
                    identifier=f"labfleet-commands-{os.getpid()}",
                    username=addr.username,
                    password=addr.password,
                ) as client:
                    self._publisher = client
                    retry.ok()
                    while True:
                        await self.dispatch_once(client)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._dispatch_wake.wait(), DISPATCH_INTERVAL_S)
                        self._dispatch_wake.clear()
            finally:
                self._publisher = None

        await reconnecting(session, retry, (aiomqtt.MqttError,))

    async def dispatch_once(self, client: aiomqtt.Client) -> int:
        """Expire, time out, and send queued commands to devices that are online; returns commands sent."""
        now = self.clock.now()
        t = DeviceCommand.__table__
        async with self.sessions() as s:
            await s.execute(
                update(t)
                .where(t.c.status == "queued", t.c.expires_at <= now)
                .values(status="expired", finished_at=now)
            )
            # Timed out: sent or acked, and no result within the timeout after sending.
            sent = (
                await s.execute(
                    select(t.c.id, t.c.sent_at, t.c.timeout_seconds, t.c.name).where(
                        t.c.status.in_(("sent", "acked"))
                    )
                )
            ).all()
            late = [
                (cid, name, (now - as_utc(sent_at)).total_seconds())
                for cid, sent_at, tmo, name in sent
                if sent_at is not None and (now - as_utc(sent_at)).total_seconds() >= tmo
            ]
            timed_out = [cid for cid, _, _ in late]
            if timed_out:
                await s.execute(
                    update(t).where(t.c.id.in_(timed_out)).values(status="timed_out", finished_at=now)
                )
            online_ids = [d for d, on in self.online.items() if on]
            queued: list[DeviceCommand] = []
            if online_ids:
                for i in range(0, len(online_ids), ingest_repo.IN_CHUNK):
                    queued += (
                        (
                            await s.execute(
                                select(DeviceCommand)
                                .where(
                                    DeviceCommand.status == "queued",
                                    DeviceCommand.device_id.in_(online_ids[i : i + ingest_repo.IN_CHUNK]),
                                )
                                .order_by(DeviceCommand.id)
                                .limit(DISPATCH_BATCH)
                            )
                        )
                        .scalars()
                        .all()
                    )
            out = []
            new_passwords: list[str] = []  # identities given a second password in this pass
            for cmd in queued[:DISPATCH_BATCH]:
                ref = self.directory.by_id(cmd.device_id)
                if ref is None or ref.revoked:
                    continue
                args: dict[str, Any] | None = cmd.args
                if cmd.name == wire.CommandName.ROTATE_CREDENTIALS:
                    # The password is made now and lives only in this payload; the database keeps its hash.
                    args = await credential_rotation.issue(s, cmd, now)
                    if args is None:
                        cmd.status, cmd.finished_at = "cancelled", now
                        continue
                    new_passwords.append(ref.username)
                cmd.status = "sent"
                cmd.sent_at = now
                out.append((cmd.id, cmd.correlation_id, cmd.name, args, as_utc(cmd.expires_at), ref))
            # Marked sent and committed before publishing: a fast device's ack can then never be
            # overwritten by a late "sent".
            await s.commit()
        for username in new_passwords:
            await self.credentials_changed(username)  # the broker takes the new password before it is sent
        if self.metrics is not None:
            for _, name, seconds in late:
                self.metrics.command_finished(name, "timeout", seconds)
        unsent: list[int] = []
        for i, (cid, corr, name, args, expires, ref) in enumerate(out):
            payload = wire.encode_command(
                wire.Command(
                    corr,
                    wire.CommandName(name),
                    int(now.timestamp() * 1000),
                    int(expires.timestamp() * 1000),
                    args or {},
                )
            )
            try:
                await client.publish(
                    self.topics.topic(ref.school_code, ref.username, wire.Channel.CMD), payload, qos=1
                )
            except aiomqtt.MqttError:
                unsent = [c[0] for c in out[i:]]
                break
        if unsent:
            async with self.sessions() as s:
                await s.execute(
                    update(t)
                    .where(t.c.id.in_(unsent), t.c.status == "sent")
                    .values(status="queued", sent_at=None)
                )
                await s.commit()
            raise aiomqtt.MqttError("publisher lost the broker mid-dispatch")
        return len(out)


@stage(Stage.PLANE)
async def device_plane_hook(stack: contextlib.AsyncExitStack, state: FleetState) -> None:
    """create_app runtime hook: start the device plane inside the lifespan; requests get it as
    `state.plane`."""
    plane = DevicePlane(
        state.settings,
        state.sessions,
        state.clock,
        metrics=state.metrics,
        snapshot=state.snapshot,
    )
    state.plane = await stack.enter_async_context(plane)
