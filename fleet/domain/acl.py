"""Broker access rules for devices (protocol section 4): the embedded broker's plugin asks these; mosquitto's
dynamic-security roles (fleet.runtime.dynsec) grant the same, and tests/mqtt/test_acl_matrix.py holds both
brokers to one matrix."""

from __future__ import annotations

from enum import StrEnum

from fleet.domain import wire


class Action(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


def device_allowed(topics: wire.Topics, school: str, identity: str, topic: str, action: Action) -> bool:
    """A device may publish only on its own uplink topics and subscribe/receive only its own cmd topic."""
    if not (wire.is_identity(school) and wire.is_device_identity(identity)):
        return False
    if action == Action.PUBLISH:
        base = topics.base(school, identity) + "/"
        return topic.startswith(base) and topic[len(base) :] in {
            c.value for c in wire.DEVICE_PUBLISH_CHANNELS
        }
    # Exact match: a filter with + or # is refused even when it would cover the cmd topic.
    return topic == topics.topic(school, identity, wire.Channel.CMD)
