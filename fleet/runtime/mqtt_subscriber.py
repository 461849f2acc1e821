"""The ingest subscriber: one MQTT 3.1.1 connection that reconnects by itself and acks in batches."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from fleet.runtime import mqtt_codec as codec

logger = logging.getLogger(__name__)

# A loopback or LAN broker answers CONNECT/SUBSCRIBE in milliseconds; 10 s means it is not coming.
HANDSHAKE_TIMEOUT_S = 10.0
# Reconnect backoff: the broker is usually local (a restart takes ~1 s), so start fast and cap low.
BACKOFF_START_S = 0.2
BACKOFF_CAP_S = 5.0


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str, username: str | None = None, password: str | None = None) -> BrokerAddress:
        """mqtt://[user:pass@]host[:port]; explicit username/password win over the URL's."""
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp"):
            raise ValueError(f"unsupported broker URL scheme {parts.scheme!r} (use mqtt://host:port)")
        return cls(parts.hostname or "127.0.0.1", parts.port or 1883,
                   username if username is not None else (unquote(parts.username) if parts.username else None),
                   password if password is not None else (unquote(parts.password) if parts.password else None))


Sink = Callable[[codec.Publish, int], None]


class _Proto(asyncio.Protocol):
    def __init__(self, owner: SubscriberSession, gen: int) -> None:
        self.owner = owner
        self.gen = gen
        self.decoder = codec.Decoder()
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[codec.Connack] = asyncio.get_running_loop().create_future()
        self.suback: asyncio.Future[codec.Suback] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_rx = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_rx = asyncio.get_running_loop().time()
        try:
            packets = self.decoder.feed(data)
        except codec.MqttProtocolError as err:
            logger.warning("broker sent invalid MQTT (%s); reconnecting", err)
            if self.transport:
                self.transport.abort()
            return
        sink = self.owner.sink
        gen = self.gen
        for p in packets:
            if type(p) is codec.Publish:
                sink(p, gen)
            elif type(p) is codec.Connack:
                if not self.connack.done():
                    self.connack.set_result(p)
            elif type(p) is codec.Suback:
                if not self.suback.done():
                    self.suback.set_result(p)

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.connack, self.suback):
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost during handshake"))
        if not self.lost.done():
            self.lost.set_result(None)


class SubscriberSession:
    """Owns one named supervisor task that keeps a persistent-session QoS 1 subscription alive."""

    def __init__(self, address: BrokerAddress, client_id: str, filters: list[str], sink: Sink, *,
                 keepalive: int = 30, clean_session: bool = False,
                 on_connected: Callable[[bool], None] | None = None) -> None:
        self.address = address
        self.client_id = client_id
        self.filters = filters
        self.sink = sink
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.on_connected = on_connected
        self.connected = asyncio.Event()
        self._proto: _Proto | None = None
        self._gen = 0
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self._stopping = False

    async def __aenter__(self) -> SubscriberSession:
        self._task = asyncio.create_task(self._run(), name=f"mqtt-subscriber-{self.client_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._stopping = True
        proto = self._proto
        if proto and proto.transport and not proto.transport.is_closing():
            proto.transport.write(codec.DISCONNECT_BYTES)
            proto.transport.close()
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    @property
    def generation(self) -> int:
        return self._gen

    def ack(self, gen: int, packet_ids: list[int]) -> bool:
        """PUBACK the ids on the connection they arrived on; a newer connection gets them redelivered."""
        proto = self._proto
        if not packet_ids or proto is None or proto.gen != gen or proto.transport is None \
                or proto.transport.is_closing():
            return False
        proto.transport.write(codec.encode_pubacks(packet_ids))
        return True

    def pause(self) -> None:
        """Stop reading from the socket: the broker then holds further messages (backpressure)."""
        self._paused = True
        if self._proto and self._proto.transport:
            self._proto.transport.pause_reading()

    def resume(self) -> None:
        self._paused = False
        if self._proto and self._proto.transport and not self._proto.transport.is_closing():
            self._proto.transport.resume_reading()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = BACKOFF_START_S
        failing = False
        while not self._stopping:
            try:
                await self._session(loop)
                delay = BACKOFF_START_S
                if failing:
                    logger.info("MQTT broker connection recovered")
                    failing = False
            except asyncio.CancelledError:
                raise
            except (OSError, ConnectionError, TimeoutError, PermissionError) as err:
                if not failing:
                    logger.warning("MQTT broker %s:%s unavailable (%s); retrying",
                                   self.address.host, self.address.port, err)
                    failing = True
            finally:
                if self.connected.is_set():
                    self.connected.clear()
                    if self.on_connected:
                        self.on_connected(False)
            if self._stopping:
                return
            await asyncio.sleep(delay * random.uniform(0.7, 1.3))
            delay = min(delay * 2, BACKOFF_CAP_S)

    async def _session(self, loop: asyncio.AbstractEventLoop) -> None:
        self._gen += 1
        gen = self._gen
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: _Proto(self, gen), self.address.host, self.address.port),
            HANDSHAKE_TIMEOUT_S)
        self._proto = proto
        assert proto.transport is not None
        try:
            proto.transport.write(codec.encode_connect(
                self.client_id, username=self.address.username, password=self.address.password,
                clean_session=self.clean_session, keepalive=self.keepalive))
            connack = await asyncio.wait_for(proto.connack, HANDSHAKE_TIMEOUT_S)
            if connack.return_code != 0:
                raise PermissionError(f"broker refused CONNECT (return code {connack.return_code})")
            proto.transport.write(codec.encode_subscribe(1, [(f, 1) for f in self.filters]))
            suback = await asyncio.wait_for(proto.suback, HANDSHAKE_TIMEOUT_S)
            if any(code == 0x80 for code in suback.return_codes):
                raise PermissionError(f"broker refused subscription(s) {self.filters}")
            if self._paused:
                proto.transport.pause_reading()
            self.connected.set()
            if self.on_connected:
                self.on_connected(True)
            logger.info("MQTT subscriber %s connected (session present: %s)", self.client_id,
                        connack.session_present)
            await self._keepalive(proto, loop)
        finally:
            if not proto.transport.is_closing():
                proto.transport.abort()

    async def _keepalive(self, proto: _Proto, loop: asyncio.AbstractEventLoop) -> None:
        interval = self.keepalive / 2
        while not proto.lost.done():
            done, _ = await asyncio.wait({proto.lost}, timeout=interval)
            if done:
                break
            # While paused we read nothing, PINGRESP included; the broker still sees our PINGREQs.
            if not self._paused and loop.time() - proto.last_rx > self.keepalive * 1.5:
                logger.warning("MQTT broker silent for %.0f s; reconnecting", loop.time() - proto.last_rx)
                break
            if proto.transport is not None and not proto.transport.is_closing():
                proto.transport.write(codec.PINGREQ_BYTES)
        raise ConnectionError("connection lost")
