"""Why an inbound message is refused, and what is done with it: the reason, the error reply to the
device, the dead letter kept without the login, and payloads that are refused on purpose (tests, simulators).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import final

from fleet.domain.wire.limits import MAX_SEQ, MAX_UPLINK_BYTES, PROTOCOL_VERSION
from fleet.domain.wire.vocabulary import Channel


class Reason(StrEnum):
    """Why an inbound message was refused; a bounded label set for metrics and dead letters."""

    BAD_TOPIC = "bad_topic"
    INVALID_IDENTITY = "invalid_identity"
    OVERSIZED = "oversized"
    MALFORMED_JSON = "malformed_json"
    UNSUPPORTED_VERSION = "unsupported_version"
    SCHEMA = "schema"
    UNKNOWN_DEVICE = "unknown_device"
    REVOKED_DEVICE = "revoked_device"
    # An `update` progress report whose `state` is not one the protocol defines (section 10).
    UNKNOWN_STATE = "unknown_state"
    # An ack or result for a correlation id the service never sent to that device.
    UNKNOWN_CORRELATION_ID = "unknown_correlation_id"


REASONS: tuple[str, ...] = tuple(r.value for r in Reason)


@final  # no subclasses: `type(x) is Rejection` is the exact, cheap test the hot paths use
@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str = ""


# Refusals answered with an error reply on the device's cmd topic: the message came from an enrolled device on
# its own topics (the broker's ACL saw to that) and the device can fix what it sends. The other reasons have
# no enrolled device to answer (bad_topic, invalid_identity, unknown_device) or must not be answered
# (revoked).
REPLIED_REASONS = frozenset(
    {Reason.OVERSIZED, Reason.MALFORMED_JSON, Reason.UNSUPPORTED_VERSION, Reason.SCHEMA}
)


def seq_of(payload: bytes) -> int | None:
    """The `seq` of a refused payload when it can be read (for the error reply), else None; never raises."""
    if len(payload) > MAX_UPLINK_BYTES:
        return None
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    seq = obj.get("seq") if type(obj) is dict else None
    return seq if type(seq) is int and 1 <= seq <= MAX_SEQ else None


def encode_error(reason: Reason, channel: Channel | None, seq: int | None, detail: str = "") -> bytes:
    """An error reply telling a device why its message was refused (sent on its cmd topic)."""
    body = {
        "v": PROTOCOL_VERSION,
        "type": "error",
        "reason": reason.value,
        "channel": channel.value if channel else None,
        "seq": seq,
        "detail": detail[:200],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def invalid_uplink(reason: Reason, ts_ms: int) -> bytes:
    """A telemetry payload the service refuses for `reason` (simulated faulty terminals, tests)."""
    if reason is Reason.MALFORMED_JSON:
        return b"{not json"
    if reason is Reason.SCHEMA:
        return json.dumps({"v": PROTOCOL_VERSION, "seq": "x", "ts": ts_ms, "battery": 900}).encode()
    if reason is Reason.OVERSIZED:
        return json.dumps(
            {"v": PROTOCOL_VERSION, "seq": 1, "ts": ts_ms, "app": "x" * (MAX_UPLINK_BYTES + 904)}
        ).encode()
    if reason is Reason.UNSUPPORTED_VERSION:
        return json.dumps({"v": PROTOCOL_VERSION + 6, "seq": 1, "ts": ts_ms}).encode()
    raise ValueError(f"no payload alone is refused for {reason.value}")


def redact_user(payload: bytes) -> bytes | None:
    """A refused payload fit to keep as a dead letter: a login `user` removed; None when it is not JSON."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if isinstance(obj, dict) and "user" in obj:
        obj["user"] = "<removed>"
    return json.dumps(obj).encode() if isinstance(obj, dict) else None
