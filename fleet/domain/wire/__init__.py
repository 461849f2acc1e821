"""The MQTT device protocol, version 1 (docs/protocol-mqtt.md): topics, payload decoders and encoders.

Pure: no I/O, no broker, no database. Every decoder returns a typed value or a `Rejection` with a reason
from the closed set `REASONS`, never raises on hostile input. The ingest hot path calls these per message,
so validation is hand-written rather than pydantic (a few microseconds per payload).

Callers use this package's names (`from fleet.domain import wire`); the modules hold one idea each:
`limits` (version, caps, patterns, ranges), `vocabulary` (channels, event types, command names), `refusals`
(reasons, rejections, error replies, dead letters), `topics`, `messages` (the typed values), `fields` (the
shared field checks), `uplink_decoding`, `uplink_encoding` and `commands` (the downlink). The names below are
the functions themselves, not wrappers: a call through the package costs what it cost in one module.
"""

from __future__ import annotations

from fleet.domain.wire.commands import decode_downlink, encode_command, parse_policy, policy_args
from fleet.domain.wire.limits import (
    BATTERY_PCT_MAX,
    BATTERY_PCT_MIN,
    CORRELATION_RE,
    DEVICE_IDENTITY_RE,
    IDENTITY_RE,
    MAX_ALLOWED_APPS,
    MAX_BYTES_DELTA,
    MAX_CODE_TEXT,
    MAX_DOWNLINK_BYTES,
    MAX_SEQ,
    MAX_SHORT_TEXT,
    MAX_TOPIC_CHARS,
    MAX_UPLINK_BYTES,
    PROTOCOL_VERSION,
    RSSI_DBM_MAX,
    RSSI_DBM_MIN,
    STORAGE_PCT_MAX,
    STORAGE_PCT_MIN,
    TEMPERATURE_C_MAX,
    TEMPERATURE_C_MIN,
    TOPIC_VERSION,
    TS_MAX_MS,
    TS_MIN_MS,
)
from fleet.domain.wire.messages import (
    Ack,
    Command,
    Event,
    Heartbeat,
    Policy,
    Result,
    ScreenSession,
    Status,
    Telemetry,
    UnknownCommand,
    Uplink,
    channel_of,
)
from fleet.domain.wire.refusals import (
    REASONS,
    REPLIED_REASONS,
    Reason,
    Rejection,
    encode_error,
    invalid_uplink,
    redact_user,
    seq_of,
)
from fleet.domain.wire.topics import (
    InvalidIdentity,
    TopicRef,
    Topics,
    check_device_identity,
    check_identity,
    is_device_identity,
    is_identity,
)
from fleet.domain.wire.uplink_decoding import decode_uplink
from fleet.domain.wire.uplink_encoding import (
    encode_heartbeat,
    encode_telemetry,
    encode_uplink,
    heartbeat_bytes,
    telemetry_bytes,
)
from fleet.domain.wire.vocabulary import (
    DEVICE_PUBLISH_CHANNELS,
    UPLINK_CHANNELS,
    Channel,
    CommandName,
    EventType,
    ScreenEnd,
)

__all__ = [
    "BATTERY_PCT_MAX",
    "BATTERY_PCT_MIN",
    "CORRELATION_RE",
    "DEVICE_IDENTITY_RE",
    "DEVICE_PUBLISH_CHANNELS",
    "IDENTITY_RE",
    "MAX_ALLOWED_APPS",
    "MAX_BYTES_DELTA",
    "MAX_CODE_TEXT",
    "MAX_DOWNLINK_BYTES",
    "MAX_SEQ",
    "MAX_SHORT_TEXT",
    "MAX_TOPIC_CHARS",
    "MAX_UPLINK_BYTES",
    "PROTOCOL_VERSION",
    "REASONS",
    "REPLIED_REASONS",
    "RSSI_DBM_MAX",
    "RSSI_DBM_MIN",
    "STORAGE_PCT_MAX",
    "STORAGE_PCT_MIN",
    "TEMPERATURE_C_MAX",
    "TEMPERATURE_C_MIN",
    "TOPIC_VERSION",
    "TS_MAX_MS",
    "TS_MIN_MS",
    "UPLINK_CHANNELS",
    "Ack",
    "Channel",
    "Command",
    "CommandName",
    "Event",
    "EventType",
    "Heartbeat",
    "InvalidIdentity",
    "Policy",
    "Reason",
    "Rejection",
    "Result",
    "ScreenEnd",
    "ScreenSession",
    "Status",
    "Telemetry",
    "TopicRef",
    "Topics",
    "UnknownCommand",
    "Uplink",
    "channel_of",
    "check_device_identity",
    "check_identity",
    "decode_downlink",
    "decode_uplink",
    "encode_command",
    "encode_error",
    "encode_heartbeat",
    "encode_telemetry",
    "encode_uplink",
    "heartbeat_bytes",
    "invalid_uplink",
    "is_device_identity",
    "is_identity",
    "parse_policy",
    "policy_args",
    "redact_user",
    "seq_of",
    "telemetry_bytes",
]
