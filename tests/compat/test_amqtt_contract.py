"""The amqtt private API that fleet.compat.amqtt relies on: present, unchanged, and behaving as assumed.

An amqtt upgrade that moves any of it fails here, by name, before it can silently reopen MQTT session
takeover (tests/mqtt/test_mqtt_takeover.py checks the behaviour end to end).
"""

from __future__ import annotations

import hashlib
import inspect
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import amqtt.broker
from amqtt.broker import Broker
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

from fleet.compat import amqtt as compat

ROOT = Path(__file__).resolve().parents[2]
# sha256 of amqtt 0.12.1's source of the methods AuthFirstBroker copies or depends on. A change means amqtt's
# session set-up changed: re-read it, port the change into fleet.compat.amqtt, then update the hash.
UPSTREAM_SOURCES = {
    # copied after the auth-first check in AuthFirstBroker._initialize_client_session
    "_initialize_client_session": "5dd89158bbe46266c62cc3ba6dedc0fcfbc197b6cfdd03d089ad3ba2a4422806",
    # calls _initialize_client_session, catches MQTTError from it, then _authenticate once (skipped by ours)
    "_client_connected": "432b724bc4fb7946f1e4de2b71ba4cd0e94aa4959afc7cb5a146353308b833a5",
    "_handle_client_session": "8b1b52a03df9daf58a0e88ab15f4b65a778b6b2289e323f821ed5e42c77c1095",
    # calls _broadcast_message for an incoming PUBLISH without its QoS (AuthFirstBroker supplies it)
    "_handle_message_delivery": "89727723da550bed02e4fb95736cb0b4399e7752bd4799a78503c7f0feafd69b",
    # replaced by AuthFirstBroker._broadcast_message: puts one dict on _broadcast_queue
    "_broadcast_message": "78ad4edb7efb3b7276857d6c91c80da0377cf54b1e0856c84c6df3df6a54c225",
    # reads each subscriber's QoS as broadcast.get("qos", subscription_qos): _QosCappedBroadcast answers it
    "_run_broadcast": "e852128b3e38e04a1b903cb9b44240d7cb8c50539a78472a48aa32544574b581",
}


def _source_hash(name: str) -> str:
    return hashlib.sha256(inspect.getsource(getattr(Broker, name)).encode()).hexdigest()


def test_installed_amqtt_is_the_tested_minor_and_pyproject_pins_it() -> None:
    assert version("amqtt").startswith(compat.TESTED_MINOR + "."), version("amqtt")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("amqtt")]
    major, minor = compat.TESTED_MINOR.split(".")
    assert re.fullmatch(rf"amqtt>={major}\.{minor}(\.\d+)?,<{major}\.{int(minor) + 1}", pin), pin


def test_the_copied_and_overridden_amqtt_methods_are_unchanged() -> None:
    changed = {
        name: _source_hash(name) for name, want in UPSTREAM_SOURCES.items() if _source_hash(name) != want
    }
    assert not changed, f"amqtt changed the session set-up fleet.compat.amqtt copies: {changed}"


def test_the_overridden_methods_keep_their_signatures() -> None:
    params = lambda fn: list(inspect.signature(fn).parameters)
    assert params(Broker._initialize_client_session) == [
        "self",
        "reader",
        "writer",
        "remote_address",
        "remote_port",
    ]
    assert params(Broker._authenticate)[:2] == ["self", "session"]
    assert params(Broker._delete_session) == ["self", "client_id"]
    assert params(Broker._handle_message_delivery) == ["self", "client_session", "handler", "wait_deliver"]
    assert params(Broker._broadcast_message) == ["self", "session", "topic", "data", "force_qos"]
    assert params(BrokerProtocolHandler.init_from_connect)[:3] == ["reader", "writer", "plugins_manager"]
    assert callable(amqtt.broker.gen_client_id)
    # AuthFirstBroker serves LabFleet's TLS context through it (called as self._create_ssl_context(listener)).
    assert params(Broker._create_ssl_context) == ["listener"]


async def test_a_live_broker_has_the_private_attributes_used() -> None:
    broker = compat.AuthFirstBroker({"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}}})
    missing = [name for name in compat.PRIVATE_ATTRIBUTES if not hasattr(broker, name)]
    assert not missing, f"amqtt Broker lost {missing}"
    assert isinstance(broker._sessions, dict)
    # Our snapshot table replaced amqtt's own, and amqtt's shutdown path (`.clear()`) still works on it.
    assert type(broker._subscriptions) is compat._SnapshotSubscriptions
    assert await broker.disconnect_client("nobody") is False


def test_the_subscription_table_can_grow_while_it_is_walked() -> None:
    """amqtt walks its subscription table across an await per subscriber; a SUBSCRIBE landing then used to
    raise inside the broadcast task and drop that message for everyone (the ingest included)."""
    table = compat._SnapshotSubscriptions()
    table["labfleet/v1/s1/+/telemetry"] = []
    for _topic, _subs in table.items():
        table["labfleet/v1/s1/TAB-1/cmd"] = []  # what a device's SUBSCRIBE does mid-broadcast
    for _topic in table:
        table["labfleet/v1/s1/TAB-2/cmd"] = []  # and mid retained-message replay on connect
    assert len(table) == 3


def test_a_broadcast_goes_out_at_the_lower_of_published_and_subscribed_qos() -> None:
    """amqtt's delivery loop asks `broadcast.get("qos", subscription_qos)` for each subscriber."""
    assert compat._QosCappedBroadcast(0, topic="t").get("qos", 1) == 0  # a QoS 0 error reply stays QoS 0
    assert compat._QosCappedBroadcast(1, topic="t").get("qos", 0) == 0  # never above the subscription's
    assert compat._QosCappedBroadcast(1, topic="t").get("qos", 1) == 1
    assert compat._QosCappedBroadcast(None, topic="t").get("qos", 1) == 1  # unknown: amqtt's own answer
    assert compat._QosCappedBroadcast(1, topic="t")["topic"] == "t"


async def test_the_connect_peek_replays_every_byte_it_read_to_amqtts_parser() -> None:
    import asyncio

    from amqtt.adapters import StreamReaderAdapter
    from amqtt.mqtt.connect import ConnectPacket

    # CONNECT, MQTT 3.1.1 (level 4), clean session, keep-alive 60, client id "TAB-1"
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + b"\x00\x05TAB-1"
    wire = bytes((0x10, len(body))) + body
    stream = asyncio.StreamReader()
    stream.feed_data(wire)
    reader = StreamReaderAdapter(stream)
    level, head = await compat._peek_protocol_level(reader)
    assert level == 4 and wire.startswith(head)
    parsed = await ConnectPacket.from_stream(compat._ReplayReader(reader, head))
    assert (parsed.proto_level, parsed.client_id) == (4, "TAB-1")
