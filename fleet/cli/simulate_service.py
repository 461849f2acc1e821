"""The service side of `labfleet simulate`: a service under test on the simulated clock, in this process or
a child one, with the control routes the simulator drives, and read-back/enrollment from its database.

The simulator (simulators.district) speaks only the public API and the MQTT protocol. This module supplies
what the API does not offer yet, from the service's own database: enrollment when `/api/v1/enroll` is absent,
and the read-back of sequence accounting, dead letters and alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import httpx
from fastapi import APIRouter, Request
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.domain.enums import Role
from fleet.domain.permissions import SYSTEM
from fleet.errors import FleetError
from fleet.persistence.db import create_engine, session_factory, upgrade_sync
from fleet.persistence.models import Device, Room, School
from fleet.persistence.models_mqtt import Alert, DeadLetter, DeviceCredential
from fleet.persistence.models_mqtt import DeviceState as DeviceStateRow
from fleet.runtime.broker_files import free_port
from fleet.runtime.brokers import MosquittoBroker
from fleet.runtime.ingest import IngestService
from fleet.runtime.plane import DevicePlane
from fleet.runtime.state import FleetState, Stage, stage
from fleet.services import enrollment
from fleet.settings import Settings
from simulators.district.clock import Anchor, SimClock
from simulators.district.fleetlink import AlertRow, Credentials, DeviceState
from simulators.district.mqttpool import raise_fd_limit

logger = logging.getLogger(__name__)

# IN (...) lists are chunked: SQLite allows 32,766 parameters, PostgreSQL 65,535; 900 keeps both happy.
IN_CHUNK = 900
# Child service start-up: migrations, broker start and the first subscription take a few seconds.
SERVICE_START_TIMEOUT_S = 60.0
# The broker's file-descriptor need: one per terminal plus headroom for the service's own sockets.
FD_HEADROOM = 2048


def _epoch(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


class DbReadBack:
    """Sequence accounting, dead letters and alerts read from the service's database (read-only)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def device_states(self, identities: list[str]) -> dict[str, DeviceState]:
        out: dict[str, DeviceState] = {}
        async with self.sessions() as s:
            for i in range(0, len(identities), IN_CHUNK):
                chunk = identities[i : i + IN_CHUNK]
                rows = (
                    await s.execute(
                        select(
                            DeviceCredential.username,
                            DeviceStateRow.last_seq,
                            DeviceStateRow.messages_total,
                            DeviceStateRow.duplicates_total,
                            DeviceStateRow.online,
                            DeviceStateRow.online_changed_at,
                            DeviceStateRow.battery_pct,
                            DeviceStateRow.firmware_version,
                            DeviceStateRow.health,
                            DeviceStateRow.bytes_down_total,
                        )
                        .join(DeviceStateRow, DeviceStateRow.device_id == DeviceCredential.device_id)
                        .where(DeviceCredential.username.in_(chunk))
                    )
                ).all()
                for u, last, msgs, dups, online, changed, batt, fw, health, down in rows:
                    out[u] = DeviceState(
                        u,
                        int(last or 0),
                        int(msgs or 0),
                        int(dups or 0),
                        bool(online),
                        _epoch(changed),
                        batt,
                        fw,
                        health,
                        int(down or 0),
                    )
        return out

    async def messages_total(self) -> int:
        async with self.sessions() as s:
            return int(
                (
                    await s.execute(select(func.coalesce(func.sum(DeviceStateRow.messages_total), 0)))
                ).scalar_one()
            )

    async def dead_letters(self) -> dict[str, int]:
        async with self.sessions() as s:
            rows = (
                await s.execute(select(DeadLetter.reason, func.count()).group_by(DeadLetter.reason))
            ).all()
        return {r: int(n) for r, n in rows}

    async def alerts(self, since: float | None = None) -> list[AlertRow]:
        q = (
            select(Device.serial_number, School.code, Room.name, Alert.rule, Alert.status)
            .join(Device, Device.id == Alert.device_id)
            .join(School, School.id == Alert.school_id)
            .outerjoin(Room, Room.id == Alert.room_id)
        )
        if since is not None:
            q = q.where(Alert.opened_at >= datetime.fromtimestamp(since, UTC))
        async with self.sessions() as s:
            rows = (await s.execute(q)).all()
        return [AlertRow(serial, code, room, rule, status) for serial, code, room, rule, status in rows]


class DbEnroller:
    """Enrollment through the service's enrollment use case, for services whose API has no /enroll yet."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], after: Callable[[], Awaitable[None]]
    ) -> None:
        self.sessions = sessions
        self.after = after  # make the broker reload credentials
        # One school at a time: each holds one write transaction, and SQLite has one writer.
        self._lock = asyncio.Lock()

    async def enroll(self, school_code: str, serials: list[str]) -> dict[str, Credentials | str]:
        out: dict[str, Credentials | str] = {}
        now = datetime.now(UTC)
        async with self._lock, self.sessions() as s:
            school = (await s.execute(select(School).where(School.code == school_code))).scalar_one()
            tok = await enrollment.create_claim_token(
                s,
                school_id=school.id,
                max_uses=max(1, min(len(serials), enrollment.MAX_TOKEN_USES)),
                ttl=timedelta(hours=1),
                allow_unknown=False,
                label="labfleet simulate",
                actor="simulate",
                now=now,
            )
            await s.commit()
            for serial in serials:
                try:
                    e = await enrollment.enroll(
                        s,
                        claim_token=tok.token,
                        serial_number=serial,
                        vendor=None,
                        model_number=None,
                        now=now,
                    )
                    out[serial] = Credentials(e.identity, e.password, e.school_code, e.device_id)
                except FleetError as err:
                    await s.rollback()
                    out[serial] = str((err.details or {}).get("reason") or type(err).__name__)
            await s.commit()
        return out

    async def done(self) -> None:
        """After the last school: one credential reload for the broker, not one per school."""
        await self.after()


# ---------------------------------------------------------------- the service under test


@dataclass
class ServiceInfo:
    api: str
    token: str
    broker_host: str
    broker_port: int
    pid: int
    broker_pid: int | None
    database_url: str


class ServiceUnderTest:
    """HTTP API + the device plane (managed broker, ingest, presence, commands), on a re-anchorable clock.

    What `labfleet serve` runs, assembled here until the plane is wired into it; all of it is the service's
    own code, and the simulated clock is the only thing injected.
    """

    def __init__(self, settings: Settings, *, http_port: int | None = None, control: bool = False) -> None:
        self.settings = settings
        self.control = control
        self.clock = SimClock()
        self.http_port = http_port or free_port()
        self.broker: Any = None
        self.plane: Any = None
        self.ingest: IngestService | None = None
        self.token = ""
        self._stack = AsyncExitStack()
        self._server: Any = None
        self._engine: Any = None
        self.sessions: async_sessionmaker[AsyncSession] | None = None

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        import uvicorn

        from fleet.app import create_app
        from fleet.services.tokens import create_token

        cfg = self.settings
        await asyncio.to_thread(upgrade_sync, cfg.database_url)
        self._engine = create_engine(cfg.database_url)
        self._stack.push_async_callback(self._engine.dispose)
        self.sessions = session_factory(self._engine)
        async with self.sessions() as s:
            _, self.token = await create_token(
                s,
                principal=SYSTEM,
                at=datetime.now(UTC),
                name="labfleet-simulate",
                role=Role.ADMIN,
                school_ids=[],
                district_wide=True,
            )
            await s.commit()
        if cfg.mqtt.broker not in ("embedded", "mosquitto"):
            raise ValueError("the service under test manages its broker: embedded or mosquitto")
        self.plane = await self._stack.enter_async_context(DevicePlane(cfg, self.sessions, self.clock))
        self.broker = self.plane.broker
        self.ingest = self.plane.ingest
        assert self.ingest is not None
        await self.ingest.wait_connected()

        @stage(Stage.PLANE)
        async def register_plane(stack: Any, state: FleetState) -> None:
            # The routes (enrollment, credentials, commands) find the plane here, as under `labfleet serve`.
            state.plane = self.plane
            # And its fleet snapshot reaches /stats/live, so `labfleet top --url` shows online against
            # expected for the service a simulation started (the plane publishes it every snapshot interval).
            self.plane.snapshot = state.snapshot

        from fleet.runtime.rollouts import rollout_hook

        # The rollout job too, as under `labfleet serve`: update commands reach the simulated terminals, whose
        # download links point at this API.
        app = create_app(
            cfg,
            clock=self.clock,
            migrate=False,
            runtime_hooks=[register_plane, rollout_hook(cfg, base_url=self.api)],
        )
        if self.control:
            app.include_router(control_router(self))
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.http_port, log_level="warning", lifespan="on", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None
        task = asyncio.create_task(self._server.serve(), name="sut-http")

        async def stop_http() -> None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._stack.push_async_callback(stop_http)
        while not self._server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def info(self) -> ServiceInfo:
        proc = getattr(self.broker, "proc", None)
        return ServiceInfo(
            self.api,
            self.token,
            self.broker.host,
            self.broker.port,
            os.getpid(),
            proc.pid if proc is not None else None,
            self.settings.database_url,
        )

    async def sync_credentials(self) -> None:
        await self.plane.credentials_changed()
        await self.plane.directory.load()
        # The district was just provisioned: the plane must know its timetables to tell a lesson from a break.
        await self.plane.timetables.load()

    async def restart_broker(self) -> None:
        if isinstance(self.broker, MosquittoBroker):
            await self.broker.stop()
            await self.broker.start()
        else:
            await self.broker.__aexit__(None, None, None)
            await self.broker.__aenter__()

    def set_anchor(self, anchor: Anchor) -> None:
        self.clock.set_anchor(anchor)


def control_router(sut: ServiceUnderTest) -> Any:
    """Loopback-only control routes for the simulator driving a child service: clock, credentials, restart."""
    router = APIRouter(prefix="/_simulate")

    @router.post("/clock")
    async def clock(request: Request) -> dict[str, str]:
        sut.set_anchor(Anchor.from_json(await request.json()))
        return {"now": sut.clock.now().isoformat()}

    @router.post("/credentials/sync")
    async def creds() -> dict[str, bool]:
        await sut.sync_credentials()
        return {"ok": True}

    @router.post("/broker/restart")
    async def restart() -> dict[str, bool]:
        await sut.restart_broker()
        return {"ok": True}

    return router


async def serve_child(settings: Settings, http_port: int) -> None:
    """Entry point of the child service: print one JSON line with its addresses, serve until SIGTERM."""
    raise_fd_limit(10_000 + FD_HEADROOM * 5)  # mosquitto inherits it: 10,000 terminals + headroom
    sut = ServiceUnderTest(settings, http_port=http_port, control=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with sut:
        info = sut.info()
        print(json.dumps(info.__dict__), flush=True)
        await stop.wait()


@dataclass
class ChildService:
    proc: asyncio.subprocess.Process
    info: ServiceInfo

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@contextlib.asynccontextmanager
async def child_service(
    database_url: str, broker: str, data_dir: Path, *, mqtt_port: int | None = None, log: Path | None = None
) -> AsyncIterator[ChildService]:
    """Start `labfleet simulate-service` as a child process and yield its addresses."""
    env = dict(
        os.environ,
        LABFLEET_DATABASE_URL=database_url,
        LABFLEET_MQTT__BROKER=broker,
        LABFLEET_MQTT__LISTEN_PORT=str(mqtt_port or free_port()),
        LABFLEET_MQTT__DATA_DIR=str(data_dir),
        LABFLEET_LOG_LEVEL="WARNING",
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    # A local log file opens at once (no need for a thread), and it is closed below, not in a `with`.
    err = open(log or data_dir / "service.log", "ab")  # noqa: SIM115, ASYNC230
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleet.cli.main",
        "simulate-service",
        "--http-port",
        str(free_port()),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=err,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), SERVICE_START_TIMEOUT_S)
        if not line:
            await proc.wait()
            raise RuntimeError(f"service under test exited ({proc.returncode}); see {err.name}")
        child = ChildService(proc, ServiceInfo(**json.loads(line)))
        try:
            yield child
        finally:
            await child.stop()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        err.close()


class ServiceControl:
    """The simulator's hooks into a child service's control routes."""

    def __init__(self, api: str) -> None:
        self.http = httpx.AsyncClient(base_url=api, timeout=60)

    async def close(self) -> None:
        await self.http.aclose()

    async def set_clock(self, anchor: Anchor) -> None:
        (await self.http.post("/_simulate/clock", json=anchor.to_json())).raise_for_status()

    async def sync_credentials(self) -> None:
        (await self.http.post("/_simulate/credentials/sync")).raise_for_status()

    async def restart_broker(self) -> None:
        (await self.http.post("/_simulate/broker/restart")).raise_for_status()


@dataclass
class Controls:
    """What the simulator may do to the service under test; None where it may not."""

    sync_credentials: Callable[[], Awaitable[None]] | None = None
    restart_broker: Callable[[], Awaitable[None]] | None = None
    set_clock: Callable[[Anchor], Awaitable[None]] | None = None
    pids: Callable[[], dict[str, int]] | None = None
