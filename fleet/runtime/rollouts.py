"""The rollout job and its MQTT link: commands out on each device's `cmd` topic, progress in on `update`.

`RolloutRuntime` is an async context manager owning two named tasks: the step loop (engine.step every
`step_seconds` on the injected clock) and the MQTT link (publish commands, read progress reports).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any, Self

import aiomqtt
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.domain import wire
from fleet.domain.clock import Clock
from fleet.domain.update_wire import decode_progress
from fleet.persistence.ingest_repo import Rejected, add_dead_letters
from fleet.persistence.models import Device, School
from fleet.persistence.models_mqtt import DeviceCredential
from fleet.runtime.mqtt_subscriber import BrokerAddress
from fleet.runtime.rollout_engine import RolloutEngine
from fleet.runtime.state import FleetState, RuntimeHook, Stage, stage
from fleet.runtime.supervise import Backoff, Retry, TaskOwner, every, reconnecting
from fleet.services.rollout_targets import DeviceTarget
from fleet.settings import Settings

log = logging.getLogger(__name__)

# Reconnect to the broker after this pause: the broker restarts in a second or two; a longer pause only
# delays progress reports (devices hold them in their QoS 1 session meanwhile).
RECONNECT_DELAY_S = 1.0
# ... doubling (jittered) while it stays away, up to this: a long outage costs one connect attempt per 30 s.
RECONNECT_CAP_S = 30.0
# Identities cached per process: a district has ~10,000 devices, a cache entry is ~100 bytes.
IDENTITY_CACHE_MAX = 20_000


class MqttUpdateLink:
    """Publishes update commands (QoS 1) and hands `update` progress reports to the engine."""

    def __init__(
        self,
        address: BrokerAddress,
        topics: wire.Topics,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        shared: bool = True,
        group: str = "rollouts",
        dead_letters_max: int = 10_000,
    ) -> None:
        self.address = address
        self.dead_letters_max = dead_letters_max
        self.topics = topics
        self.sessions = sessions
        self.clock = clock
        self.shared = shared
        self.group = group
        self.engine: RolloutEngine | None = None
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.rejected: Counter[str] = Counter()
        self._ids: dict[tuple[str, str], int | None] = {}

    async def send(self, target: DeviceTarget, command: wire.Command) -> None:
        if self.client is None:
            raise ConnectionError("the rollout link has no broker connection")
        topic = self.topics.topic(target.school_code, target.identity, wire.Channel.CMD)
        await self.client.publish(topic, wire.encode_command(command), qos=1)

    async def run(self) -> None:
        """Connect, subscribe to progress and read it, reconnecting for as long as the task lives."""
        filt = self.topics.uplink_filter(wire.Channel.UPDATE)
        if self.shared:
            filt = self.topics.shared(self.group, filt)
        retry = Retry("rollout link's broker connection", log, Backoff(RECONNECT_DELAY_S, RECONNECT_CAP_S))

        async def session() -> None:
            try:
                async with aiomqtt.Client(
                    self.address.host,
                    self.address.port,
                    identifier=f"labfleet-rollouts-{os.getpid()}",
                    username=self.address.username,
                    password=self.address.password,
                ) as client:
                    await client.subscribe(filt, qos=1)
                    self.client = client
                    self.connected.set()
                    retry.ok()
                    async for msg in client.messages:
                        await self.handle(str(msg.topic), bytes(msg.payload))
            finally:
                self.client = None
                self.connected.clear()

        await reconnecting(session, retry, (aiomqtt.MqttError,))

    async def handle(self, topic: str, payload: bytes) -> bool:
        """One progress message; a bad one is counted by reason and dropped, never raised."""
        ref = self.topics.parse(topic)
        if isinstance(ref, wire.Rejection) or ref.channel != wire.Channel.UPDATE:
            await self._refuse(
                topic, payload, None, wire.Rejection(wire.Reason.BAD_TOPIC, "not an update topic")
            )
            return False
        p = decode_progress(payload)
        if isinstance(p, wire.Rejection):
            await self._refuse(topic, payload, ref.device, p)
            return False
        device_id = await self._device_id(ref.school, ref.device)
        if device_id is None or self.engine is None:
            self.rejected["unknown_device"] += 1
            return False
        try:
            return await self.engine.on_progress(device_id, p, self.clock.now())
        except Exception:  # one bad report must not stop the link
            log.exception("progress report from device %d could not be applied", device_id)
            self.rejected["error"] += 1
            return False

    async def _refuse(self, topic: str, payload: bytes, identity: str | None, rej: wire.Rejection) -> None:
        """Count a refused progress report and keep it as a dead letter, like refused ingest messages."""
        self.rejected[rej.reason.value] += 1
        head = payload[: wire.MAX_UPLINK_BYTES]
        letter = Rejected(self.clock.now(), rej.reason.value, topic, identity, head, len(payload), rej.detail)
        try:
            async with self.sessions() as s:
                await add_dead_letters(s, [letter], self.dead_letters_max)
                await s.commit()
        except Exception:  # the link outlives a database hiccup; the count above still says it happened
            log.exception("a refused progress report could not be kept as a dead letter")

    async def _device_id(self, school_code: str, identity: str) -> int | None:
        key = (school_code, identity)
        if key in self._ids:
            return self._ids[key]
        async with self.sessions() as s:
            row = (
                await s.execute(
                    select(Device.id)
                    .join(School, School.id == Device.school_id)
                    .outerjoin(DeviceCredential, DeviceCredential.device_id == Device.id)
                    .where(
                        School.code == school_code,
                        or_(DeviceCredential.username == identity, Device.serial_number == identity),
                    )
                )
            ).first()
        if len(self._ids) >= IDENTITY_CACHE_MAX:
            self._ids.clear()
        self._ids[key] = row[0] if row else None
        return self._ids[key]


class RolloutRuntime:
    """Owns the step loop and (when a broker is known) the MQTT link; exit stops both."""

    def __init__(
        self, engine: RolloutEngine, clock: Clock, step_seconds: float, link: MqttUpdateLink | None = None
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.step_seconds = step_seconds
        self.link = link
        self._tasks = TaskOwner(log)

    async def __aenter__(self) -> Self:
        if self.link is not None:
            self.link.engine = self.engine
            self._spawn(self.link.run(), "rollouts-mqtt-link")
        self._spawn(self._loop(), "rollouts-step")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._tasks.aclose()

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.spawn(coro, name)

    async def _loop(self) -> None:
        async def step() -> None:
            await self.engine.step(self.clock.now())

        await every(self.step_seconds, step, Retry("rollout step", log))


def rollout_hook(settings: Settings, *, base_url: str = "") -> RuntimeHook:
    """A runtime hook: starts the rollout job; uses the device plane's broker when one runs (state.plane)."""

    @stage(Stage.ROLLOUTS)
    async def hook(stack: AsyncExitStack, state: FleetState) -> None:
        plane = state.plane
        address = getattr(plane, "address", None)
        link = None
        if address is not None:
            shared = bool(getattr(getattr(plane, "broker", None), "shared_subscriptions", True))
            link = MqttUpdateLink(
                address,
                wire.Topics(settings.mqtt.topic_prefix),
                state.sessions,
                state.clock,
                shared=shared,
                dead_letters_max=settings.mqtt.dead_letters_max,
            )
        else:
            log.warning("no MQTT broker: rollouts are planned but update commands cannot reach terminals")
        url = (
            base_url
            or settings.rollouts.public_base_url
            or f"{'https' if settings.http.tls else 'http'}://{settings.http.host}:{settings.http.port}"
        )
        # One link for both: a serial kit's edge agent holds the kit's own MQTT session on the kit's cmd
        # topic.
        engine = RolloutEngine(
            state.sessions,
            settings.rollouts,
            link,
            edge=link,
            metrics=state.metrics,
            base_url=url,
        )
        state.rollout_engine = engine
        await stack.enter_async_context(
            RolloutRuntime(engine, state.clock, settings.rollouts.step_seconds, link)
        )

    return hook
