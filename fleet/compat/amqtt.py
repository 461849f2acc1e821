"""amqtt 0.12's private API, in one place: the embedded broker's auth-first CONNECT, its session table, its
answer to MQTT 5 and the QoS it delivers at.

amqtt has no public hook that runs before it looks up the session a CONNECT names, no public way to close a
client's connection, a subscription table that is iterated across awaits, no answer at all to an MQTT 5
CONNECT, and it delivers every message at the subscription's QoS whatever it was published with. What
LabFleet needs of each is here; tests/compat/test_amqtt_contract.py pins every private name used below and
fails on an amqtt upgrade that moves one (pyproject.toml pins the tested minor).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from contextvars import ContextVar
from typing import Any

from amqtt.adapters import ReaderAdapter
from amqtt.broker import Broker
from amqtt.errors import MQTTError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.utils import gen_client_id

# The amqtt minor this module was written against (pyproject.toml pins it; the contract test checks both).
TESTED_MINOR = "0.12"
# Broker attributes read or replaced below; the contract test checks each exists on a live broker.
PRIVATE_ATTRIBUTES = (
    "_sessions",
    "_subscriptions",
    "_delete_session",
    "_authenticate",
    "config",
    "_broadcast_queue",
    "_create_ssl_context",
)

# MQTT 5 CONNACK: reason code 0x84 "Unsupported Protocol Version", no properties (MQTT 5.0 section 3.2.2.2).
# An MQTT 5 client reads a CONNACK in the MQTT 5 form, so it gets that form: it names the reason exactly.
MQTT5_UNSUPPORTED_CONNACK = bytes((0x20, 0x03, 0x00, 0x84, 0x00))
MQTT5_LEVEL = 5
# The QoS of the PUBLISH being delivered, set around amqtt's handling of one incoming PUBLISH (one task per
# client connection, so concurrent clients never see each other's value).
_PUBLISH_QOS: ContextVar[int | None] = ContextVar("labfleet_amqtt_publish_qos", default=None)


class _ReplayReader(ReaderAdapter):
    """A reader that first returns bytes already read off the stream, then reads on."""

    def __init__(self, inner: ReaderAdapter, head: bytes) -> None:
        self._inner = inner
        self._head = head

    async def read(self, n: int = -1) -> bytes:
        if not self._head:
            return await self._inner.read(n)
        if n == -1:
            out, self._head = self._head, b""
            return out + await self._inner.read(n)
        out, self._head = self._head[:n], self._head[n:]
        if len(out) < n:
            out += await self._inner.read(n - len(out))
        return out

    def feed_eof(self) -> None:
        self._inner.feed_eof()


async def _peek_protocol_level(reader: ReaderAdapter) -> tuple[int | None, bytes]:
    """The protocol level of the CONNECT at the head of `reader` (None when it is no MQTT CONNECT), and the
    bytes read to find it, to be replayed to amqtt's own parser."""
    head = b""

    async def take(n: int) -> bytes:
        nonlocal head
        try:
            got = await reader.read(n)
        except asyncio.IncompleteReadError as err:
            raise MQTTError("connection closed before a complete CONNECT") from err
        if len(got) < n:
            raise MQTTError("connection closed before a complete CONNECT")
        head += got
        return got

    if (await take(1))[0] >> 4 != 1:  # packet type 1 = CONNECT
        return None, head
    for _ in range(4):  # remaining length: a variable byte integer of at most 4 bytes
        if not (await take(1))[0] & 0x80:
            break
    name_len = int.from_bytes(await take(2), "big")
    if name_len != 4 or await take(4) != b"MQTT":
        return None, head  # MQTT 3.1's "MQIsdp" or garbage: amqtt answers or drops it as before
    return (await take(1))[0], head


class _QosCappedBroadcast(dict[str, Any]):
    """amqtt's broadcast record, whose QoS per subscriber is min(published QoS, subscription's QoS).

    amqtt's delivery loop reads `broadcast.get("qos", subscription_qos)`: without a forced QoS every message
    went out at the subscription's QoS (a QoS 0 error reply arrived at QoS 1), and with one (a Last Will) at
    the published QoS even above the subscription's maximum. MQTT 3.1.1 section 3.8.4 wants the minimum.
    """

    def __init__(self, published_qos: int | None, **fields: Any) -> None:
        super().__init__(**fields)
        self.published_qos = published_qos

    def get(self, key: str, default: Any = None) -> Any:
        if key == "qos" and self.published_qos is not None:
            return self.published_qos if default is None else min(self.published_qos, default)
        return super().get(key, default)


class _SnapshotSubscriptions(dict[str, Any]):
    """amqtt 0.12's subscription table, iterated over a snapshot.

    amqtt walks `_subscriptions` across awaits (the topic-filter plugin call in `_run_broadcast`, retained
    messages on connect). A client subscribing in that window raised "dictionary changed size during
    iteration" inside the broadcast task, and that message was dropped for every subscriber, the ingest
    included. Iterating a copy delivers it; a subscription added meanwhile starts with the next message.
    """

    def items(self):  # a list where dict gives a view: iterated the same way
        return list(super().items())

    def __iter__(self):
        return iter(list(super().keys()))


class AuthFirstBroker(Broker):
    """amqtt's broker, authenticating a CONNECT before it touches the session of the client id it names.

    amqtt 0.12 looks the client id up first and authenticates afterwards: a clean-session CONNECT deleted that
    session (its subscriptions and queued commands), a persistent one adopted it and overwrote its username,
    and the live connection of that id was taken over, all before the auth plugin said no. So anyone who knew
    a device's identity (it is in its topics) could knock it off with a wrong password. Here a refused CONNECT
    gets CONNACK "not authorized" and is closed without touching any session; an accepted one (a device's
    client id is its username, see BrokerAuthority.authenticate) goes on exactly as amqtt's own code does.
    """

    def __init__(self, *args: Any, tls: ssl.SSLContext | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _SnapshotSubscriptions()
        self._tls = tls

    def _create_ssl_context(self, listener: Any) -> ssl.SSLContext:
        # amqtt builds its own context from certfile/keyfile (and asks every client for a certificate); a
        # listener with `ssl: true` serves ours instead: TLS 1.2+, the chain and key LabFleet loaded.
        if self._tls is None:
            return super()._create_ssl_context(listener)
        return self._tls

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Any]:
        level, head = await _peek_protocol_level(reader)
        if level == MQTT5_LEVEL:
            # amqtt 0.12 speaks MQTT 3.1.1 only, and its parser failed on an MQTT 5 CONNECT without a word:
            # the client waited for a CONNACK until its own timeout. It now hears why, in its own protocol.
            writer.write(MQTT5_UNSUPPORTED_CONNACK)
            with contextlib.suppress(Exception):  # the client may be gone already; it is refused either way
                await writer.drain()
            await writer.close()
            raise MQTTError("MQTT 5 CONNECT refused: the embedded broker speaks MQTT 3.1.1")
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                _ReplayReader(reader, head), writer, self.plugins_manager
            )
        except MQTTError:
            await writer.close()
            raise
        if not await super()._authenticate(session, None):
            connack = ConnackPacket.build(0, NOT_AUTHORIZED)
            with contextlib.suppress(Exception):  # the client may be gone already; it is refused either way
                await connack.to_stream(writer)
            await writer.close()
            raise MQTTError("CONNECT refused before any session was touched")
        # From here on as amqtt 0.12.1's Broker._initialize_client_session (the contract test pins its
        # source).
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            for attr in (
                "will_flag",
                "will_message",
                "will_topic",
                "will_qos",
                "keep_alive",
                "username",
                "password",
            ):
                setattr(existing, attr, getattr(session, attr))
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        session.labfleet_authenticated = True
        return handler, session

    async def _authenticate(self, session: Any, listener: Any) -> bool:
        # amqtt authenticates again right after _initialize_client_session (its only caller of this): the
        # CONNECT was checked above, so that second database lookup and password check is skipped once.
        if getattr(session, "labfleet_authenticated", False):
            session.labfleet_authenticated = False
            return True
        return bool(await super()._authenticate(session, listener))

    async def _handle_message_delivery(self, client_session: Any, handler: Any, wait_deliver: Any) -> bool:
        # An incoming PUBLISH: remember its QoS for the _broadcast_message call amqtt makes while handling it.
        message = wait_deliver.result()
        token = _PUBLISH_QOS.set(getattr(message, "qos", None))
        try:
            served = bool(await super()._handle_message_delivery(client_session, handler, wait_deliver))
        finally:
            _PUBLISH_QOS.reset(token)
        if not served:
            # amqtt stops reading a client that broke the protocol (a PUBLISH to a `$` topic or with a
            # wildcard) but left its connection open, so the client hung until its keep-alive ran out. Close
            # it, as the protocol doc says.
            with contextlib.suppress(Exception):
                await handler.writer.close()
        return served

    async def _broadcast_message(
        self, session: Any, topic: str | None, data: Any, force_qos: int | None = None
    ) -> None:
        # As amqtt 0.12.1's own (the contract test pins its source), with the published QoS carried along.
        published = force_qos if force_qos is not None else _PUBLISH_QOS.get()
        await self._broadcast_queue.put(
            _QosCappedBroadcast(published, session=session, topic=topic, data=data)
        )

    async def disconnect_client(self, client_id: str) -> bool:
        """Close the connection of `client_id`, as a lost link would end it; False when it has none."""
        entry = self._sessions.get(client_id)
        if entry is None or entry[1] is None:
            return False
        # amqtt has no admin "disconnect client"; closing its stream ends the session like a lost link.
        with contextlib.suppress(Exception):
            await entry[1].writer.close()
        return True
