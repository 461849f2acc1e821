"""The ingest subscriber: paho-mqtt 2.x driven from the asyncio loop, QoS 1 with manual acks after commit.

paho is used without its network thread: its socket is registered with the event loop (`add_reader`,
`add_writer`) and `loop_read` / `loop_write` / `loop_misc` run on the loop thread, the way aiomqtt drives it.
So the message callback, the batch it fills, the commit and the acknowledgements all run on one thread, and
an ack never has to cross threads. aiomqtt itself is not used here because aiomqtt 2.x has no manual acks,
and a message may be acknowledged only after its database commit (DESIGN.md, "MQTT client").

One `SubscriberSession` keeps a persistent-session (clean_session False, stable client id) QoS 1 subscription
alive across broker restarts. Each connection is one paho `Client` (one connection lifetime, as a driver is);
the session numbers connections with a generation, so a batch is acknowledged only on the connection it
arrived on: after a reconnect the broker redelivers what was not acknowledged, and the device sequence window
makes the redelivery harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from fleet.compat.paho import BufferedClient
from fleet.runtime.supervise import Backoff, Retry, cancel_and_wait, reconnecting

logger = logging.getLogger(__name__)

# A loopback or LAN broker answers CONNECT/SUBSCRIBE in milliseconds; 10 s means it is not coming.
HANDSHAKE_TIMEOUT_S = 10.0
# Reconnect backoff: the broker is usually local (a restart takes ~1 s), so start fast and cap low.
BACKOFF_START_S = 0.2
BACKOFF_CAP_S = 5.0
# paho's keepalive bookkeeping (PINGREQ, the PINGRESP deadline) runs from loop_misc; once a second is what
# paho's own loop does and is ample for a 30 s keepalive.
MISC_INTERVAL_S = 1.0
# paho's loop_read handles one packet per call on a subscriber; a readable socket is drained by calling it
# repeatedly, at most this many times before yielding to the loop so the writer and HTTP are not starved
# (a 64 KiB socket buffer holds ~400 telemetry messages).
READ_BURST = 500


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
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 1883,
            username if username is not None else (unquote(parts.username) if parts.username else None),
            password if password is not None else (unquote(parts.password) if parts.password else None),
        )


# topic, payload, packet id (None for QoS 0), connection generation
Sink = Callable[[str, bytes, int | None, int], None]
# connected?, reason (for a disconnect: one of metrics.DISCONNECT_REASONS)
StateListener = Callable[[bool, str], None]


class BrokerRefused(ConnectionError):
    """The broker refused our CONNECT or a subscription (bad credentials, ACL)."""


def disconnect_reason(reason_code: Any) -> str:
    """paho's disconnect reason code -> the bounded reason vocabulary of the metrics module."""
    name = getattr(reason_code, "getName", lambda: str(reason_code))()
    if getattr(reason_code, "value", None) == 0 or name in ("Success", "Normal disconnection"):
        return "clean"
    return {
        "Keep alive timeout": "keepalive_timeout",
        "Protocol error": "protocol_error",
        "Malformed packet": "protocol_error",
        "Session taken over": "taken_over",
        "Server shutting down": "server_shutdown",
        "Not authorized": "auth_failed",
        "Bad user name or password": "auth_failed",
    }.get(name, "network")


class _Connection:
    """One paho client over one TCP connection, its socket registered with the running loop."""

    def __init__(self, owner: SubscriberSession, gen: int, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.gen = gen
        self.loop = loop
        self.delivered = 0
        self.sock: Any = None
        self.reading = False
        self.connack: asyncio.Future[tuple[bool, Any]] = loop.create_future()
        self.suback: asyncio.Future[list[Any]] = loop.create_future()
        self.lost: asyncio.Future[str] = loop.create_future()
        addr = owner.address
        c = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=owner.client_id,
            clean_session=owner.clean_session,
            protocol=MQTTProtocolVersion.MQTTv311,
            manual_ack=True,
        )
        if addr.username is not None:
            c.username_pw_set(addr.username, addr.password)
        c.connect_timeout = HANDSHAKE_TIMEOUT_S
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

    # ---- paho callbacks (all on the loop thread once the socket is registered)
    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason_code: Any, _p: Any) -> None:
        if not self.connack.done():
            self.connack.set_result((bool(getattr(flags, "session_present", False)), reason_code))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, reason_codes: list[Any], _p: Any) -> None:
        if not self.suback.done():
            self.suback.set_result(list(reason_codes))

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, reason_code: Any, _p: Any) -> None:
        self._unregister()
        reason = disconnect_reason(reason_code)
        for fut in (self.connack, self.suback):
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection lost during handshake ({reason})"))
        if not self.lost.done():
            self.lost.set_result(reason)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.delivered += 1
        qos = msg.qos
        # paho's receive path builds the payload as bytes (bytearray is only what a publisher may hand it).
        payload: bytes = msg.payload  # type: ignore[assignment]
        self.owner.sink(msg.topic, payload, msg.mid if qos else None, self.gen)

    def _on_register_write(self, _c: Any, _u: Any, sock: Any) -> None:
        self.loop.add_writer(sock, self._writable)

    def _on_unregister_write(self, _c: Any, _u: Any, sock: Any) -> None:
        self.loop.remove_writer(sock)

    def _on_socket_close(self, _c: Any, _u: Any, _sock: Any) -> None:
        self._unregister()

    # ---- socket events
    def _readable(self) -> None:
        c = self.client
        owner = self.owner
        for _ in range(READ_BURST):
            if owner._paused or not self.reading:
                return  # resume() picks up what is buffered
            seen = self.delivered
            rc = c.loop_read()
            # paho's loop_read reports "nothing more to read" and "read one packet" alike. A call that
            # delivered no message with nothing left in our buffer (a partial packet, or an empty socket)
            # ends the burst: the loop calls us again when more bytes arrive. An ack or ping read from the
            # buffer delivers nothing either, but the buffer still holds packets: go on.
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or (self.delivered == seen and not c.buffered()):
                return
        if c.buffered():
            # Burst cap reached with packets still in memory: the socket will not signal them, so come back
            # after the loop has run the writer and other tasks once.
            self.loop.call_soon(self._readable)

    def _writable(self) -> None:
        self.client.loop_write()

    # ---- registration
    def register(self) -> None:
        """After the (blocking, off-loop) connect: hand paho's socket to the event loop."""
        c = self.client
        self.sock = c.socket()
        if self.sock is None:
            raise ConnectionError("paho has no socket after connect")
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write
        c.on_socket_close = self._on_socket_close
        if not self.owner._paused:
            self.start_reading()
        if c.want_write():
            self.loop.add_writer(self.sock, self._writable)

    def start_reading(self) -> None:
        if self.sock is not None and not self.reading and self.sock.fileno() >= 0:
            self.loop.add_reader(self.sock, self._readable)
            self.reading = True
            if self.client.buffered():
                # Packets read before a pause wait in memory, not in the socket: no read event will come.
                self.loop.call_soon(self._readable)

    def stop_reading(self) -> None:
        if self.sock is not None and self.reading:
            self.loop.remove_reader(self.sock)
            self.reading = False

    def _unregister(self) -> None:
        if self.sock is None:
            return
        self.stop_reading()
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_writer(self.sock)
        self.sock = None

    def ack(self, mids: list[int]) -> None:
        ack = self.client.ack
        for mid in mids:
            ack(mid, 1)
        # Write now rather than on the next writable event: one loop pass less between commit and ack.
        self.client.loop_write()

    def close(self) -> None:
        c = self.client
        if self.sock is not None:
            with contextlib.suppress(Exception):
                c.disconnect()
                c.loop_write()
        self._unregister()
        with contextlib.suppress(Exception):
            sock = c.socket()
            if sock is not None:
                sock.close()


class SubscriberSession:
    """Owns one named supervisor task that keeps a persistent-session QoS 1 subscription alive."""

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        filters: list[str],
        sink: Sink,
        *,
        keepalive: int = 30,
        clean_session: bool = False,
        on_state: StateListener | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.address = address
        self.client_id = client_id
        self.filters = filters
        self.sink = sink
        self.keepalive = keepalive
        self.clean_session = clean_session
        self.on_state = on_state
        self.connected = asyncio.Event()
        self.session_present: bool | None = None
        self._conn: _Connection | None = None
        self._gen = 0
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self._stopping = False
        self._retry = Retry(
            f"MQTT broker {address.host}:{address.port} (ingest subscriber)",
            logger,
            Backoff(BACKOFF_START_S, BACKOFF_CAP_S, rng=rng),
        )

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"mqtt-subscriber-{self.client_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._stopping = True
        if self._conn is not None:
            self._conn.close()
        await cancel_and_wait([self._task], logger)
        self._task = None

    @property
    def generation(self) -> int:
        return self._gen

    def ack(self, gen: int, packet_ids: list[int]) -> bool:
        """PUBACK the ids on the connection they arrived on; a newer connection gets them redelivered."""
        conn = self._conn
        if not packet_ids or conn is None or conn.gen != gen or conn.sock is None or conn.lost.done():
            return False
        conn.ack(packet_ids)
        return True

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish QoS 0 on the current connection (error replies to devices); False when not connected."""
        conn = self._conn
        if conn is None or conn.sock is None or conn.lost.done():
            return False
        conn.client.publish(topic, payload, qos=0)
        conn.client.loop_write()
        return True

    def pause(self) -> None:
        """Stop reading from the socket: the broker then holds further messages (backpressure)."""
        self._paused = True
        if self._conn is not None:
            self._conn.stop_reading()

    def resume(self) -> None:
        self._paused = False
        if self._conn is not None and not self._conn.lost.done():
            self._conn.start_reading()

    async def _run(self) -> None:
        await reconnecting(
            self._attempt,
            self._retry,
            (OSError, ConnectionError, TimeoutError),
            stopping=lambda: self._stopping,
        )

    async def _attempt(self) -> None:
        """One connection lifetime, and what its end means for the state listener."""
        loop = asyncio.get_running_loop()
        reason = "network"
        try:
            reason = await self._session(loop)
        except BrokerRefused:
            reason = "auth_failed"
            raise
        finally:
            if self._conn is not None:
                self._conn.close()
            if self.connected.is_set():
                self.connected.clear()
                if self.on_state:
                    self.on_state(False, "clean" if self._stopping else reason)

    async def _session(self, loop: asyncio.AbstractEventLoop) -> str:
        """One connection lifetime; returns the reason it ended."""
        self._gen += 1
        conn = _Connection(self, self._gen, loop)
        # paho's connect resolves, opens the TCP connection and sends CONNECT, blocking: off the loop. No
        # socket callback is set yet, so paho writes CONNECT itself and nothing touches the loop from there.
        await asyncio.to_thread(conn.client.connect, self.address.host, self.address.port, self.keepalive)
        self._conn = conn
        conn.register()
        present, rc = await asyncio.wait_for(asyncio.shield(conn.connack), HANDSHAKE_TIMEOUT_S)
        if rc.is_failure:
            raise BrokerRefused(f"CONNECT refused: {rc}")
        result, _ = conn.client.subscribe([(f, 1) for f in self.filters])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"SUBSCRIBE not sent ({result})")
        codes = await asyncio.wait_for(asyncio.shield(conn.suback), HANDSHAKE_TIMEOUT_S)
        if any(code.is_failure for code in codes):
            raise BrokerRefused(f"subscription(s) {self.filters} refused")
        self.session_present = present
        self._retry.ok()
        self.connected.set()
        if self.on_state:
            self.on_state(True, "connected")
        logger.info("MQTT subscriber %s connected (session present: %s)", self.client_id, present)
        while not conn.lost.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(conn.lost), MISC_INTERVAL_S)
            if not conn.lost.done():
                # PINGREQ when due; closes the socket (-> on_disconnect) when the PINGRESP is overdue. While
                # paused we read nothing, PINGRESP included, so a pause longer than the keepalive reconnects
                # (and the broker redelivers what was not acknowledged).
                conn.client.loop_misc()
        return conn.lost.result()
