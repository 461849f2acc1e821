"""amqtt 0.12's private API, in one place: the embedded broker's auth-first CONNECT and its session table.

amqtt has no public hook that runs before it looks up the session a CONNECT names, no public way to close a
client's connection, and a subscription table that is iterated across awaits. What LabFleet needs of each is
here; tests/compat/test_amqtt_contract.py pins every private name used below and fails on an amqtt upgrade
that moves one (pyproject.toml pins the tested minor).
"""

from __future__ import annotations

import contextlib
from typing import Any

from amqtt.broker import Broker
from amqtt.errors import MQTTError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.utils import gen_client_id

# The amqtt minor this module was written against (pyproject.toml pins it; the contract test checks both).
TESTED_MINOR = "0.12"
# Broker attributes read or replaced below; the contract test checks each exists on a live broker.
PRIVATE_ATTRIBUTES = ("_sessions", "_subscriptions", "_delete_session", "_authenticate", "config")


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _SnapshotSubscriptions()

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Any]:
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
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

    async def disconnect_client(self, client_id: str) -> bool:
        """Close the connection of `client_id`, as a lost link would end it; False when it has none."""
        entry = self._sessions.get(client_id)
        if entry is None or entry[1] is None:
            return False
        # amqtt has no admin "disconnect client"; closing its stream ends the session like a lost link.
        with contextlib.suppress(Exception):
            await entry[1].writer.close()
        return True
