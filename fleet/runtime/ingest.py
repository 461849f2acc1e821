"""Telemetry ingest: subscribe (QoS 1, shared), decode, batch, commit, then acknowledge.

Flow per message: the subscriber's message callback (paho-mqtt, driven from this event loop) parses the topic
and payload (fleet.domain.wire) and appends to a bounded in-memory batch. A writer task commits a batch every
`ingest_batch_ms` or `ingest_batch_max` messages, then PUBACKs exactly the messages of that batch. A crash
before the commit leaves them unacknowledged, so the broker's persistent session redelivers them; the
per-device sequence window makes the redelivery harmless. When the batch is full the socket is paused
(backpressure): the broker holds the rest, beyond at most one socket read (fleet.compat.paho.RECV_CHUNK)
already in memory.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.domain import wire
from fleet.domain.clock import Clock
from fleet.persistence import ingest_repo
from fleet.persistence.directory import DeviceDirectory, ReferenceWatch
from fleet.persistence.ingest_repo import DeviceRef, Inbound, Rejected
from fleet.persistence.timetables import Timetables
from fleet.runtime.mqtt_subscriber import BrokerAddress, SubscriberSession
from fleet.runtime.supervise import cancel_and_wait
from fleet.services import privacy
from fleet.settings import Settings

logger = logging.getLogger(__name__)

# The device_kind label under which this process's own broker connection is counted.
SERVICE_KIND = "service"
# At most one error reply per device per minute (protocol 6.2): a terminal stuck sending a bad payload every
# second must not get a reply flood back, and the service must not spend its hot path answering it.
ERROR_REPLY_INTERVAL_S = 60.0
# Parsed topics are remembered: a device uses the same few topics all day, and parsing one is ~4 us of a
# ~60 us message. 10,000 devices x 6 uplink channels fit; past this the cache starts over (bounded memory
# against a client cycling through made-up topics).
TOPIC_CACHE_MAX = 65_536

# Presence cause of an offline transition -> the metrics module's disconnect reasons.
_DISCONNECT_REASON = {
    "lwt": "lwt",
    "shutdown": "clean",
    "status": "clean",
    "heartbeat_timeout": "heartbeat_timeout",
}

# wire.Reason -> the metrics module's closed label sets (ingest result, dead-letter reason).
_METRIC_REASON = {
    "malformed_json": "invalid_json",
    "oversized": "too_large",
    "schema": "invalid_schema",
    "unsupported_version": "invalid_schema",
    "bad_topic": "invalid_schema",
    "invalid_identity": "invalid_schema",
    "unknown_device": "unknown_device",
    "revoked_device": "unknown_device",
    "unknown_state": "invalid_schema",
    "unknown_correlation_id": "invalid_schema",
}


@dataclass(slots=True)
class IngestStats:
    received: int = 0
    committed: int = 0
    new: int = 0
    duplicates: int = 0
    rejected: int = 0
    dropped: int = 0
    batches: int = 0
    commit_failures: int = 0


class _Pending:
    __slots__ = ("acks", "first_mono", "items", "rejected", "replies")
    # first_mono: when the oldest message of this batch arrived from the broker (clock.monotonic())

    def __init__(self) -> None:
        self.items: list[Inbound] = []
        self.rejected: list[Rejected] = []
        self.acks: dict[int, list[int]] = {}
        self.first_mono = 0.0
        self.replies: list[tuple[str, bytes]] = []  # (cmd topic, error reply) sent after the commit

    def __len__(self) -> int:
        return len(self.items) + len(self.rejected)


PresenceListener = Callable[[ingest_repo.BatchOutcome], None]


class IngestService:
    """One ingest worker: a subscriber session, a bounded batch, a writer task. Use `async with`."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        directory: DeviceDirectory | None = None,
        timetables: Timetables | None = None,
        watch: ReferenceWatch | None = None,
        reference_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: Any = None,
        client_id: str | None = None,
        address: BrokerAddress | None = None,
        listeners: list[PresenceListener] | None = None,
        shared: bool | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.mqtt
        self.sessions = sessions
        self.clock = clock
        self.metrics = metrics
        self.topics = wire.Topics(self.cfg.topic_prefix)
        self.directory = directory or DeviceDirectory(sessions, clock)
        self.timetables = timetables or Timetables(sessions)
        # Given by the device plane (which runs it); a standalone worker (`labfleet ingest`) runs its own, so
        # a device moved to another room counts there in every process within REFERENCE_POLL_S.
        self._owns_watch = watch is None
        self.watch = watch or ReferenceWatch(sessions, self.directory, self.timetables, sleep=reference_sleep)
        self.address = address or BrokerAddress.from_url(
            self.cfg.url, self.cfg.service_username, self.cfg.service_password or None
        )
        # Stable per worker so the broker keeps our persistent session (and its unacked messages) across
        # restarts of this process; several workers need distinct ids (LABFLEET worker index or pid).
        self.client_id = client_id or f"labfleet-ingest-{os.getpid()}"
        self.stats = IngestStats()
        self.listeners = list(listeners or [])
        self._pending = _Pending()
        self._wake = asyncio.Event()
        self._paused = False
        self._writer: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._sub: SubscriberSession | None = None
        self._stopping = False
        self._draining = False  # drain(): reading stays paused
        self._flush_lock = asyncio.Lock()
        self._now = clock.now()
        self._now_mono = 0.0
        self._committing_since: float | None = (
            None  # arrival of the oldest message in the batch being committed
        )
        self._replied: dict[
            int, float
        ] = {}  # device id -> when it last got an error reply (clock.monotonic())
        self._topic_cache: dict[str, wire.TopicRef | wire.Rejection] = {}
        self._woken = False  # the writer has been told the batch is full (once per batch, not per message)
        # Shared subscriptions split the stream over N workers; amqtt (embedded) has none: one worker.
        self.shared = settings.mqtt.ingest_shared if shared is None else shared

    # ------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        # Ingest is what turns logins into pseudonyms: the key it runs with is recorded (by fingerprint), so
        # the security inspection can say when the key last changed.
        await privacy.note_pseudonym_key(self.sessions, self.settings.pseudonym_key, self.clock.now())
        if self._owns_watch:
            await self.watch.load()
        # The directory and timetables are long-lived: move them out of the cyclic GC's scans, which otherwise
        # walk every one of them on each full collection triggered by the per-message allocations.
        gc.collect()
        gc.freeze()
        group = self.cfg.ingest_group
        filters = [self.topics.uplink_filter(ch) for ch in wire.UPLINK_CHANNELS]
        if self.shared:
            filters = [self.topics.shared(group, f) for f in filters]
        self._sub = SubscriberSession(
            self.address, self.client_id, filters, self.on_publish, on_state=self._on_connection
        )
        await self._sub.__aenter__()
        self._writer = asyncio.create_task(self._write_loop(), name=f"ingest-writer-{self.client_id}")
        if self._owns_watch:
            self._refresher = asyncio.create_task(
                self.watch.run(), name=f"ingest-reference-watch-{self.client_id}"
            )
        if self.metrics is not None:
            self.metrics.ingest_queue_capacity.set(self.cfg.ingest_queue_max)
            # Read at scrape time, so a commit that hangs shows as growing lag rather than a frozen value.
            self.metrics.ingest_lag_seconds.set_function(self.lag_seconds)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping = True
        await cancel_and_wait([self._refresher, self._writer], logger)
        # The uncommitted tail stays unacked: the broker redelivers it to the next worker or restart.
        if self._sub is not None:
            await self._sub.close()

    async def wait_connected(self, timeout: float = 10.0) -> None:
        assert self._sub is not None
        await asyncio.wait_for(self._sub.connected.wait(), timeout)

    def _on_connection(self, up: bool, reason: str) -> None:
        m = self.metrics
        if m is None:
            return
        m.broker_connection(up, lost=reason != "clean")
        # The ingest connection is counted with the device sessions, as device kind "service".
        if up:
            m.mqtt_connected(SERVICE_KIND)
        else:
            m.mqtt_disconnected(SERVICE_KIND, reason)

    @property
    def connected(self) -> bool:
        """The subscriber holds a broker connection now."""
        return self._sub is not None and self._sub.connected.is_set()

    def lag_seconds(self) -> float:
        """Age of the oldest message received from the broker and not yet committed (0 when none)."""
        oldest = self._committing_since
        if oldest is None and len(self._pending):
            oldest = self._pending.first_mono
        return 0.0 if oldest is None else max(0.0, self.clock.monotonic() - oldest)

    # ------------------------------------------------------------ hot path (socket callback)
    def on_publish(self, topic: str, payload: bytes, packet_id: int | None, gen: int) -> None:
        self.stats.received += 1
        pend = self._pending
        if not pend.items and not pend.rejected:
            pend.first_mono = self.clock.monotonic()
        if packet_id is not None:
            acks = pend.acks.get(gen)
            if acks is None:
                acks = pend.acks[gen] = []
            acks.append(packet_id)
        # One clock read per millisecond, not per message: a socket read delivers hundreds at once.
        mono = time.monotonic()
        if mono - self._now_mono > 0.001:
            self._now = self.clock.now()
            self._now_mono = mono
        now = self._now
        ref = self._topic_cache.get(topic)
        if ref is None:
            ref = self.topics.parse(topic)
            if len(self._topic_cache) >= TOPIC_CACHE_MAX:
                self._topic_cache.clear()
            self._topic_cache[topic] = ref
        if type(ref) is wire.Rejection:
            self._reject(pend, now, ref, topic, payload, None, None)
        else:
            dev = self.directory.get(ref.device)
            value = wire.decode_uplink(ref.channel, payload)
            if type(value) is wire.Rejection:
                self._reject(pend, now, value, topic, payload, ref.device, ref.channel)
                if dev is not None and dev.school_code == ref.school and not dev.revoked:
                    self._error_reply(pend, dev, value, ref.channel, payload)
            elif dev is None or dev.school_code != ref.school:
                # Resolved by the writer (database lookup) unless this identity missed recently.
                pend.items.append(
                    Inbound(
                        None,
                        ref.channel,
                        value,
                        now,
                        (ref.device, ref.school, topic, payload),
                    )
                )
            elif dev.revoked:
                self._reject(
                    pend,
                    now,
                    wire.Rejection(wire.Reason.REVOKED_DEVICE, "credentials revoked"),
                    topic,
                    payload,
                    ref.device,
                    ref.channel,
                )
            else:
                pend.items.append(Inbound(dev, ref.channel, value, now))
        n = len(pend.items) + len(pend.rejected)
        if n >= self.cfg.ingest_batch_max and not self._woken:
            self._woken = True
            self._wake.set()
        if n >= self.cfg.ingest_queue_max and not self._paused and self._sub is not None:
            self._paused = True
            self._sub.pause()

    def _error_reply(
        self, pend: _Pending, dev: DeviceRef, rej: wire.Rejection, channel: wire.Channel, payload: bytes
    ) -> None:
        if rej.reason not in wire.REPLIED_REASONS:
            return
        mono = self.clock.monotonic()
        last = self._replied.get(dev.device_id)
        if last is not None and mono - last < ERROR_REPLY_INTERVAL_S:
            return
        self._replied[dev.device_id] = mono
        pend.replies.append(
            (
                self.topics.topic(dev.school_code, dev.username, wire.Channel.CMD),
                wire.encode_error(rej.reason, channel, wire.seq_of(payload), rej.detail),
            )
        )

    def _reject(
        self,
        pend: _Pending,
        now: datetime,
        rej: wire.Rejection,
        topic: str,
        payload: bytes,
        identity: str | None,
        channel: wire.Channel | None,
    ) -> None:
        self.stats.rejected += 1
        head = payload[: wire.MAX_UPLINK_BYTES]
        kept = wire.redact_user(head) if channel == wire.Channel.EVENT or channel is None else head
        pend.rejected.append(Rejected(now, rej.reason.value, topic, identity, kept, len(payload), rej.detail))

    # ------------------------------------------------------------ writer
    async def _write_loop(self) -> None:
        interval = self.cfg.ingest_batch_ms / 1000
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if len(self._pending):
                await self.flush()

    async def drain(self) -> None:
        """Stop taking messages in, then commit (and acknowledge) everything already taken in: what a SIGTERM
        does, so a stopping worker leaves nothing received and uncommitted (the broker keeps the rest)."""
        self._draining = True
        if self._sub is not None:
            self._sub.pause()
        await self.flush()  # after the writer's flush in progress, if any: one commit at a time

    async def flush(self) -> None:
        """Commit what is pending, then acknowledge it; on failure nothing is acked (redelivery)."""
        async with self._flush_lock:
            await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, _Pending()
        self._woken = False
        if self._paused and self._sub is not None and not self._draining:
            self._paused = False
            self._sub.resume()
        started = time.monotonic()
        self._committing_since = batch.first_mono
        try:
            await self._resolve_unknown(batch)
            async with self.sessions() as session:
                outcome = await ingest_repo.apply_batch(
                    session,
                    batch.items,
                    batch.rejected,
                    now=self.clock.now(),
                    pseudonym_key=self.settings.pseudonym_key,
                    expected_offline=self.timetables.expected_offline,
                    dead_letters_max=self.cfg.dead_letters_max,
                    topics=self.topics,
                )
                await session.commit()
        except asyncio.CancelledError:
            self._committing_since = None
            raise
        except Exception:
            # Not acked -> the broker redelivers after reconnect; drop the connection to force that now.
            self._committing_since = None
            self.stats.commit_failures += 1
            logger.exception("ingest commit of %d messages failed; they stay unacknowledged", len(batch))
            if self.metrics is not None:
                self.metrics.ingest_message("error", len(batch))
            if self._sub is not None:
                await self._sub.close()
                self._sub = SubscriberSession(
                    self._sub.address,
                    self.client_id,
                    self._sub.filters,
                    self.on_publish,
                    on_state=self._on_connection,
                )
                await self._sub.__aenter__()
            return
        elapsed = time.monotonic() - started
        self._committing_since = None
        if self._sub is not None:
            for gen, pids in batch.acks.items():
                self._sub.ack(gen, pids)
            # Error replies go out once the refusal is recorded; best effort (QoS 0), as the protocol says.
            for topic, body in batch.replies:
                self._sub.publish(topic, body)
        st = self.stats
        st.batches += 1
        st.committed += len(batch)
        st.new += outcome.new
        st.duplicates += outcome.duplicates
        self._record(batch, outcome, elapsed)
        for listener in self.listeners:
            try:
                listener(outcome)
            except Exception:
                logger.exception("ingest listener failed")

    async def _resolve_unknown(self, batch: _Pending) -> None:
        unresolved = [it for it in batch.items if it.ref is None]
        if not unresolved:
            return
        wanted = [it.unresolved[0] for it in unresolved if it.unresolved is not None]
        names = sorted({name for name in wanted if not self.directory.recently_missed(name)})
        if names:
            await self.directory.load(names)
        keep = []
        for it in batch.items:
            if it.ref is not None:
                keep.append(it)
                continue
            assert it.unresolved is not None  # set whenever ref is None
            name, school, topic, payload = it.unresolved
            dev = self.directory.get(name)
            if dev is None or dev.school_code != school:
                self._reject(
                    batch,
                    it.received_at,
                    wire.Rejection(wire.Reason.UNKNOWN_DEVICE, "not enrolled here"),
                    topic,
                    payload,
                    name,
                    it.channel,
                )
            elif dev.revoked:
                self._reject(
                    batch,
                    it.received_at,
                    wire.Rejection(wire.Reason.REVOKED_DEVICE, "credentials revoked"),
                    topic,
                    payload,
                    name,
                    it.channel,
                )
            else:
                it.ref = dev
                keep.append(it)
        batch.items = keep

    def _record(self, batch: _Pending, outcome: ingest_repo.BatchOutcome, elapsed: float) -> None:
        m = self.metrics
        if m is None:
            return
        m.ingest_committed(len(batch), elapsed)
        if outcome.new:
            m.ingest_message("ok", outcome.new)
        if outcome.duplicates:
            m.ingest_message("duplicate", outcome.duplicates)
        reasons: dict[str, int] = {}
        for r in batch.rejected:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        for reason, n in reasons.items():
            label = _METRIC_REASON.get(reason, reason)
            m.ingest_message(label, n)
            m.dead_letter(label, n)
        if outcome.unknown_replies:  # ingested (and counted above as ok) and also kept as dead letters
            m.dead_letter(_METRIC_REASON["unknown_correlation_id"], outcome.unknown_replies)
        for school, (up, down) in outcome.bytes_by_school.items():
            if up:
                m.school_traffic(school, "up", up)
            if down:
                m.school_traffic(school, "down", down)
        for ref, state in outcome.health:
            m.health_transition(ref.model, state)
        for sev in outcome.alerts_opened:
            m.alert_opened(sev)
        for command, result, seconds in outcome.command_durations:
            m.command_finished(command, result, seconds)
        for ref, online, _expected, cause in outcome.presence:
            # A device's MQTT session shows up as presence: its `online` status (or first message) opens one,
            # its Last Will, an `offline` status or a shutdown closes one.
            if online:
                m.mqtt_connected(ref.device_kind)
            else:
                m.mqtt_disconnected(ref.device_kind, _DISCONNECT_REASON.get(cause, cause))
        m.ingest_queue_depth.set(len(self._pending))
