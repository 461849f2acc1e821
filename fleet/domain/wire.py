"""The MQTT device protocol, version 1 (docs/protocol-mqtt.md): topics, payload decoders and encoders.

Pure: no I/O, no broker, no database. Every decoder returns a typed value or a `Rejection` with a reason
from the closed set `REASONS`, never raises on hostile input. The ingest hot path calls these per message,
so validation is hand-written rather than pydantic (a few microseconds per payload).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, final, overload

import orjson

PROTOCOL_VERSION = 1
# The topic segment that names the protocol version; a v2 would live beside it on the same broker.
TOPIC_VERSION = "v1"

# 4 KiB: a full telemetry message is ~200 bytes; anything near this is a bug or an attack, and the cap bounds
# the memory one queued message can hold (10,000 queued x 4 KiB = 40 MB worst case).
MAX_UPLINK_BYTES = 4096
# 16 KiB: a set_policy command with a 200-entry allowed-apps list fits with room to spare.
MAX_DOWNLINK_BYTES = 16384
# Topic names past this are refused before they are split (the longest legal topic is ~160 characters).
MAX_TOPIC_CHARS = 256
# Sequence numbers fit in a JSON number without precision loss (IEEE double integer range).
MAX_SEQ = 2**53 - 1
# Identity: device serials and school codes as they appear in topics. No MQTT wildcards (+ #), no level
# separator (/), no leading $ (reserved for broker topics), no whitespace or control characters.
IDENTITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# A device identity is also the device's MQTT username and client id, so on top of that it holds no ':':
# mosquitto's password file is `username:hash`, split at the first ':', and such a device could never log in.
DEVICE_IDENTITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CORRELATION_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
# Short free-text fields (firmware version, app id, error code) are capped so one field cannot fill a row.
MAX_SHORT_TEXT = 128
# Codes and labels (firmware version, error code, ack reason) are shorter still: they end up in metric-free
# columns and reports, and 64 characters holds any semver with build metadata.
MAX_CODE_TEXT = 64
# Telemetry ranges: a reading outside them is a broken sensor or a forged message, refused as `schema`.
BATTERY_PCT_MIN, BATTERY_PCT_MAX = 0, 100
TEMPERATURE_C_MIN, TEMPERATURE_C_MAX = -40.0, 150.0  # the operating range of any board we ship, with margin
STORAGE_PCT_MIN, STORAGE_PCT_MAX = 0.0, 100.0
RSSI_DBM_MIN, RSSI_DBM_MAX = (
    -130,
    0,
)  # Wi-Fi RSSI: 0 dBm is the strongest possible, -130 below any noise floor
# Command lists and policies: bounded so a command fits MAX_DOWNLINK_BYTES.
MAX_ALLOWED_APPS = 200


class Channel(StrEnum):
    """The last topic level; uplink channels are published by devices, `cmd` by the service."""

    TELEMETRY = "telemetry"
    HEARTBEAT = "heartbeat"
    EVENT = "event"
    ACK = "ack"
    RESULT = "result"
    STATUS = "status"
    CMD = "cmd"
    # Firmware-update progress (section 10): read by the rollout job, not by telemetry ingest.
    UPDATE = "update"


UPLINK_CHANNELS: tuple[Channel, ...] = (
    Channel.TELEMETRY,
    Channel.HEARTBEAT,
    Channel.EVENT,
    Channel.ACK,
    Channel.RESULT,
    Channel.STATUS,
)
# Every channel a device may publish on: the ingest channels plus update progress.
DEVICE_PUBLISH_CHANNELS: tuple[Channel, ...] = (*UPLINK_CHANNELS, Channel.UPDATE)


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


REASONS: tuple[str, ...] = tuple(r.value for r in Reason)


class EventType(StrEnum):
    BOOT = "boot"
    ERROR = "error"
    LOGIN = "login"
    LOGOUT = "logout"
    APP_START = "app_start"
    APP_STOP = "app_stop"
    LOCKED = "locked"
    UNLOCKED = "unlocked"


class CommandName(StrEnum):
    REBOOT = "reboot"
    LOCK = "lock"
    UNLOCK = "unlock"
    SET_POLICY = "set_policy"
    DIAGNOSTICS = "diagnostics"
    UPDATE = "update"


class InvalidIdentity(ValueError):
    """An identity that cannot appear as one topic level."""


def check_identity(value: str) -> str:
    """Return `value` if it is a legal device or school identity, else raise InvalidIdentity."""
    if not isinstance(value, str) or not IDENTITY_RE.match(value):
        raise InvalidIdentity(f"identity {value!r} must match {IDENTITY_RE.pattern}")
    return value


def is_identity(value: str) -> bool:
    return isinstance(value, str) and IDENTITY_RE.match(value) is not None


def check_device_identity(value: str) -> str:
    """Return `value` if it can be a device identity (a topic level and a broker username), else raise."""
    if isinstance(value, str) and ":" in value and IDENTITY_RE.match(value):
        raise InvalidIdentity(
            f"device identity {value!r} holds a ':', which an MQTT username cannot "
            f"(mosquitto's password file is username:hash); use '-' instead"
        )
    if not is_device_identity(value):
        raise InvalidIdentity(f"device identity {value!r} must match {DEVICE_IDENTITY_RE.pattern}")
    return value


def is_device_identity(value: str) -> bool:
    return isinstance(value, str) and DEVICE_IDENTITY_RE.match(value) is not None


# ---------------------------------------------------------------- topics


@dataclass(frozen=True, slots=True)
class Topics:
    """Builds and parses topics under one prefix: `<prefix>/v1/<school>/<device>/<channel>`."""

    prefix: str = "labfleet"

    def __post_init__(self) -> None:
        parts = self.prefix.split("/")
        if (
            not self.prefix
            or any(not p or "+" in p or "#" in p for p in parts)
            or self.prefix.startswith("$")
        ):
            raise InvalidIdentity(f"topic prefix {self.prefix!r} must be non-empty levels without wildcards")

    def base(self, school: str, device: str) -> str:
        return f"{self.prefix}/{TOPIC_VERSION}/{check_identity(school)}/{check_identity(device)}"

    def topic(self, school: str, device: str, channel: Channel | str) -> str:
        return f"{self.base(school, device)}/{Channel(channel).value}"

    def uplink_filter(self, channel: Channel | str = "+") -> str:
        """Subscription filter for one uplink channel (or all with '+') of every device."""
        ch = channel if channel == "+" else Channel(channel).value
        return f"{self.prefix}/{TOPIC_VERSION}/+/+/{ch}"

    def shared(self, group: str, topic_filter: str) -> str:
        """A shared-subscription filter (`$share/<group>/<filter>`) spreading one stream over N workers."""
        return f"$share/{check_identity(group)}/{topic_filter}"

    def parse(self, topic: str) -> TopicRef | Rejection:
        """Split an inbound topic into (school, device, channel), or a Rejection."""
        if len(topic) > MAX_TOPIC_CHARS:
            return Rejection(Reason.BAD_TOPIC, "topic too long")
        head = self.prefix + "/" + TOPIC_VERSION + "/"
        if not topic.startswith(head):
            return Rejection(Reason.BAD_TOPIC, "topic outside the protocol prefix")
        rest = topic[len(head) :].split("/")
        if len(rest) != 3:
            return Rejection(Reason.BAD_TOPIC, "topic must be <school>/<device>/<channel>")
        school, device, channel = rest
        if not (IDENTITY_RE.match(school) and IDENTITY_RE.match(device)):
            return Rejection(Reason.INVALID_IDENTITY, "school or device level is not a legal identity")
        try:
            ch = Channel(channel)
        except ValueError:
            return Rejection(Reason.BAD_TOPIC, "unknown channel")
        return TopicRef(school, device, ch)


@dataclass(frozen=True, slots=True)
class TopicRef:
    school: str
    device: str
    channel: Channel


# ---------------------------------------------------------------- values


@final  # no subclasses: `type(x) is Rejection` is the exact, cheap test the hot paths use
@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Telemetry:
    seq: int
    ts_ms: int
    battery_pct: int | None = None
    temperature_c: float | None = None
    storage_used_pct: float | None = None
    firmware: str | None = None
    app: str | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    rssi_dbm: int | None = None
    charging: bool | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    seq: int
    ts_ms: int
    rssi_dbm: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    ts_ms: int
    type: EventType
    code: str | None = None
    # Only for login/logout: the raw user reference. The ingest seam replaces it by an HMAC pseudonym before
    # anything is stored or logged; repr=False keeps it out of any accidental log line.
    user: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Ack:
    id: str
    ts_ms: int
    accepted: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Result:
    id: str
    ts_ms: int
    ok: bool
    code: str | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Status:
    online: bool
    ts_ms: int | None = None
    reason: str | None = None


Uplink = Telemetry | Heartbeat | Event | Ack | Result | Status

_CHANNEL_OF: dict[type, Channel] = {
    Telemetry: Channel.TELEMETRY,
    Heartbeat: Channel.HEARTBEAT,
    Event: Channel.EVENT,
    Ack: Channel.ACK,
    Result: Channel.RESULT,
    Status: Channel.STATUS,
}


def channel_of(value: Uplink) -> Channel:
    """The uplink channel a message is published on."""
    return _CHANNEL_OF[type(value)]


@dataclass(frozen=True, slots=True)
class Policy:
    """Screen-time policy for myopia prevention, plus the allowed-apps list."""

    session_minutes: int
    daily_minutes: int
    break_minutes: int = 10
    allowed_apps: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UnknownCommand:
    """A well-formed command whose name this protocol version does not know: the device acks it refused."""

    id: str
    name: str
    issued_at_ms: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Command:
    id: str
    name: CommandName
    issued_at_ms: int
    expires_at_ms: int
    args: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- field checks


class _Bad(Exception):
    """Internal: a schema violation with its field; becomes a Rejection at the decoder boundary."""


@overload
def _int(obj: dict[str, Any], key: str, lo: int, hi: int, *, required: Literal[True] = ...) -> int: ...
@overload
def _int(obj: dict[str, Any], key: str, lo: int, hi: int, *, required: bool) -> int | None: ...
def _int(obj: dict[str, Any], key: str, lo: int, hi: int, *, required: bool = True) -> int | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise _Bad(f"{key} is required")
        return None
    # bool is an int subclass in Python; JSON true must not pass as 1.
    if type(v) is not int or not lo <= v <= hi:
        raise _Bad(f"{key} must be an integer in [{lo}, {hi}]")
    return v


def _num(obj: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = obj.get(key)
    if v is None:
        return None
    if type(v) not in (int, float) or not lo <= v <= hi:  # NaN fails the range check too
        raise _Bad(f"{key} must be a number in [{lo}, {hi}]")
    return float(v)


def _text(
    obj: dict[str, Any], key: str, *, required: bool = False, max_len: int = MAX_SHORT_TEXT
) -> str | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise _Bad(f"{key} is required")
        return None
    if type(v) is not str or not 0 < len(v) <= max_len or not v.isprintable():
        raise _Bad(f"{key} must be printable text of 1..{max_len} characters")
    return v


@overload
def _bool(obj: dict[str, Any], key: str, *, required: Literal[True]) -> bool: ...
@overload
def _bool(obj: dict[str, Any], key: str, *, required: bool = ...) -> bool | None: ...
def _bool(obj: dict[str, Any], key: str, *, required: bool = False) -> bool | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise _Bad(f"{key} is required")
        return None
    if type(v) is not bool:
        raise _Bad(f"{key} must be true or false")
    return v


# Timestamps: milliseconds since the Unix epoch, between 2020 and 2100; the clock of a terminal that lost its
# RTC reads 1970, which is refused rather than stored as a 56-year-old reading.
TS_MIN_MS = 1_577_836_800_000
TS_MAX_MS = 4_102_444_800_000
# Telemetry `up`/`down` are bytes since the previous message; 10 GB caps a single bogus value's damage to
# the roll-ups.
MAX_BYTES_DELTA = 10**10


def _load(payload: bytes, max_bytes: int) -> dict[str, Any] | Rejection:
    if len(payload) > max_bytes:
        return Rejection(Reason.OVERSIZED, f"{len(payload)} bytes > {max_bytes}")
    try:
        # orjson accepts strict RFC 8259 JSON in UTF-8 only: invalid UTF-8, NaN/Infinity and nesting deeper
        # than 1,024 levels all raise its JSONDecodeError (a ValueError).
        obj = orjson.loads(payload)
    except ValueError:
        return Rejection(Reason.MALFORMED_JSON, "payload is not UTF-8 JSON")
    if type(obj) is not dict:
        return Rejection(Reason.SCHEMA, "payload must be a JSON object")
    if obj.get("v") != PROTOCOL_VERSION or type(obj.get("v")) is not int:
        return Rejection(Reason.UNSUPPORTED_VERSION, "v must be 1")
    return obj


def _telemetry(o: dict[str, Any]) -> Telemetry:
    # Fast path for the message every terminal sends every minute: the common valid shape checked inline,
    # without a helper call per field, and the value built positionally (together ~2x cheaper). Anything it
    # does not accept, valid or not, goes through the field checks, which give the precise reason; a property
    # test pins that the two agree on every message the fast path accepts.
    g = o.get
    seq, ts, battery, temp, storage = g("seq"), g("ts"), g("battery"), g("temp_c"), g("storage_pct")
    fw, app, up, down, rssi, charging = g("fw"), g("app"), g("up"), g("down"), g("rssi"), g("charging")
    if (
        type(seq) is int
        and 1 <= seq <= MAX_SEQ
        and type(ts) is int
        and TS_MIN_MS <= ts <= TS_MAX_MS
        and (battery is None or type(battery) is int and BATTERY_PCT_MIN <= battery <= BATTERY_PCT_MAX)
        and (temp is None or type(temp) is float and TEMPERATURE_C_MIN <= temp <= TEMPERATURE_C_MAX)
        and (storage is None or type(storage) is float and STORAGE_PCT_MIN <= storage <= STORAGE_PCT_MAX)
        and (fw is None or type(fw) is str and 0 < len(fw) <= MAX_CODE_TEXT and fw.isprintable())
        and (app is None or type(app) is str and 0 < len(app) <= MAX_SHORT_TEXT and app.isprintable())
        and (up is None or type(up) is int and 0 <= up <= MAX_BYTES_DELTA)
        and (down is None or type(down) is int and 0 <= down <= MAX_BYTES_DELTA)
        and (rssi is None or type(rssi) is int and RSSI_DBM_MIN <= rssi <= RSSI_DBM_MAX)
        and (charging is None or type(charging) is bool)
    ):
        return Telemetry(seq, ts, battery, temp, storage, fw, app, up or 0, down or 0, rssi, charging)
    return _telemetry_checked(o)


def _telemetry_checked(o: dict[str, Any]) -> Telemetry:
    return Telemetry(
        seq=_int(o, "seq", 1, MAX_SEQ),
        ts_ms=_int(o, "ts", TS_MIN_MS, TS_MAX_MS),
        battery_pct=_int(o, "battery", BATTERY_PCT_MIN, BATTERY_PCT_MAX, required=False),
        temperature_c=_num(o, "temp_c", TEMPERATURE_C_MIN, TEMPERATURE_C_MAX),
        storage_used_pct=_num(o, "storage_pct", STORAGE_PCT_MIN, STORAGE_PCT_MAX),
        firmware=_text(o, "fw", max_len=MAX_CODE_TEXT),
        app=_text(o, "app"),
        bytes_up=_int(o, "up", 0, MAX_BYTES_DELTA, required=False) or 0,
        bytes_down=_int(o, "down", 0, MAX_BYTES_DELTA, required=False) or 0,
        rssi_dbm=_int(o, "rssi", RSSI_DBM_MIN, RSSI_DBM_MAX, required=False),
        charging=_bool(o, "charging"),
    )


def _heartbeat(o: dict[str, Any]) -> Heartbeat:
    return Heartbeat(
        seq=_int(o, "seq", 1, MAX_SEQ),
        ts_ms=_int(o, "ts", TS_MIN_MS, TS_MAX_MS),
        rssi_dbm=_int(o, "rssi", RSSI_DBM_MIN, RSSI_DBM_MAX, required=False),
    )


def _event(o: dict[str, Any]) -> Event:
    raw_type = o.get("type")
    try:
        etype = EventType(raw_type) if type(raw_type) is str else None
    except ValueError:
        etype = None
    if etype is None:
        raise _Bad("type must be one of " + ", ".join(e.value for e in EventType))
    user = _text(o, "user", required=etype in (EventType.LOGIN, EventType.LOGOUT))
    return Event(
        seq=_int(o, "seq", 1, MAX_SEQ),
        ts_ms=_int(o, "ts", TS_MIN_MS, TS_MAX_MS),
        type=etype,
        code=_text(o, "code", required=etype == EventType.ERROR, max_len=MAX_CODE_TEXT),
        user=user,
    )


def _correlation(o: dict[str, Any]) -> str:
    v = o.get("id")
    if type(v) is not str or not CORRELATION_RE.match(v):
        raise _Bad("id must be the command's correlation id")
    return v


def _ack(o: dict[str, Any]) -> Ack:
    return Ack(
        id=_correlation(o),
        ts_ms=_int(o, "ts", TS_MIN_MS, TS_MAX_MS),
        accepted=_bool(o, "accepted", required=True),
        reason=_text(o, "reason", max_len=MAX_CODE_TEXT),
    )


def _result(o: dict[str, Any]) -> Result:
    detail = o.get("detail")
    if detail is not None and type(detail) is not dict:
        raise _Bad("detail must be an object")
    return Result(
        id=_correlation(o),
        ts_ms=_int(o, "ts", TS_MIN_MS, TS_MAX_MS),
        ok=_bool(o, "ok", required=True),
        code=_text(o, "code", max_len=MAX_CODE_TEXT),
        detail=detail,
    )


def _status(o: dict[str, Any]) -> Status:
    state = o.get("state")
    if state not in ("online", "offline"):
        raise _Bad("state must be online or offline")
    return Status(
        online=state == "online",
        ts_ms=_int(o, "ts", TS_MIN_MS, TS_MAX_MS, required=False),
        reason=_text(o, "reason", max_len=MAX_CODE_TEXT),
    )


_DECODERS: dict[Channel, Callable[[dict[str, Any]], Uplink]] = {
    Channel.TELEMETRY: _telemetry,
    Channel.HEARTBEAT: _heartbeat,
    Channel.EVENT: _event,
    Channel.ACK: _ack,
    Channel.RESULT: _result,
    Channel.STATUS: _status,
}


def decode_uplink(channel: Channel, payload: bytes) -> Uplink | Rejection:
    """Decode one device message on an uplink channel; never raises."""
    decoder = _DECODERS.get(channel)
    if decoder is None:
        return Rejection(Reason.BAD_TOPIC, "not an uplink channel")
    obj = _load(payload, MAX_UPLINK_BYTES)
    if isinstance(obj, Rejection):
        return obj
    try:
        return decoder(obj)
    except _Bad as err:
        return Rejection(Reason.SCHEMA, str(err))


# ---------------------------------------------------------------- downlink (service -> device)


def parse_policy(args: dict[str, Any]) -> Policy:
    """Validate set_policy arguments (used by the API before a command is queued); raises ValueError."""
    try:
        session = _int(args, "session_minutes", 1, 480)
        daily = _int(args, "daily_minutes", 1, 1440)
        brk = _int(args, "break_minutes", 0, 120, required=False)
    except _Bad as err:
        raise ValueError(str(err)) from None
    apps = args.get("allowed_apps", [])
    if (
        type(apps) is not list
        or len(apps) > MAX_ALLOWED_APPS
        or not all(type(a) is str and 0 < len(a) <= MAX_SHORT_TEXT and a.isprintable() for a in apps)
    ):
        raise ValueError(f"allowed_apps must be a list of at most {MAX_ALLOWED_APPS} app ids")
    if session > daily:
        raise ValueError("session_minutes cannot exceed daily_minutes")
    return Policy(session, daily, 10 if brk is None else brk, tuple(apps))


def policy_args(p: Policy) -> dict[str, Any]:
    return {
        "session_minutes": p.session_minutes,
        "daily_minutes": p.daily_minutes,
        "break_minutes": p.break_minutes,
        "allowed_apps": list(p.allowed_apps),
    }


def encode_command(cmd: Command) -> bytes:
    body = {
        "v": PROTOCOL_VERSION,
        "type": "command",
        "id": cmd.id,
        "cmd": cmd.name.value,
        "args": cmd.args,
        "issued_at": cmd.issued_at_ms,
        "expires_at": cmd.expires_at_ms,
    }
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) > MAX_DOWNLINK_BYTES:
        raise ValueError(f"command is {len(data)} bytes, over {MAX_DOWNLINK_BYTES}")
    return data


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


def decode_downlink(payload: bytes) -> Command | UnknownCommand | dict[str, Any] | Rejection:
    """What a device does with a cmd-topic message: a Command, an UnknownCommand (to refuse in its ack), an
    error dict, or a Rejection."""
    obj = _load(payload, MAX_DOWNLINK_BYTES)
    if type(obj) is Rejection:
        return obj
    assert isinstance(obj, dict)
    if obj.get("type") == "error":
        return obj
    try:
        if obj.get("type") != "command":
            raise _Bad("type must be command or error")
        cid = _correlation(obj)
        issued = _int(obj, "issued_at", TS_MIN_MS, TS_MAX_MS)
        expires = _int(obj, "expires_at", TS_MIN_MS, TS_MAX_MS)
        args = obj.get("args", {})
        if type(args) is not dict:
            raise _Bad("args must be an object")
        raw = obj.get("cmd")
        if type(raw) is not str or not 0 < len(raw) <= MAX_CODE_TEXT:
            raise _Bad("cmd must be a command name")
        try:
            name = CommandName(raw)
        except ValueError:
            return UnknownCommand(cid, raw, issued, expires)
        return Command(cid, name, issued, expires, args)
    except _Bad as err:
        return Rejection(Reason.SCHEMA, str(err))


@functools.lru_cache(maxsize=1024)
def _json_str(value: str) -> bytes:
    """A JSON string literal, cached: firmware versions and app names repeat across a fleet."""
    return json.dumps(value).encode()


def _json_num(value: float) -> bytes:
    # json.dumps writes a float as its repr, an int (and a bool, which is not one here) with %d.
    return repr(value).encode() if type(value) is float else b"%d" % value


# The full telemetry body, as encode_uplink writes it: %r of a float is its repr, which is what JSON holds.
_TELEMETRY_FULL = (
    b'{"v":1,"seq":%d,"ts":%d,"battery":%d,"temp_c":%r,"storage_pct":%r,"fw":%s%s,"up":%d,"down":%d,'
    b'"rssi":%d,"charging":%s}'
)


def telemetry_bytes(
    seq: int,
    ts_ms: int,
    battery_pct: int | None,
    temperature_c: float | None,
    storage_used_pct: float | None,
    firmware: str | None,
    app: str | None,
    bytes_up: int,
    bytes_down: int,
    rssi_dbm: int | None,
    charging: bool | None,
) -> bytes:
    """Telemetry (fields in Telemetry's order) as encode_uplink writes it, byte for byte, without a dict, a
    JSON encoder pass or a Telemetry value: the message every terminal sends every minute (the simulators
    and benchmarks send millions)."""
    if (
        battery_pct is not None
        and type(temperature_c) is float
        and type(storage_used_pct) is float
        and firmware is not None
        and rssi_dbm is not None
        and charging is not None
    ):
        return _TELEMETRY_FULL % (
            seq,
            ts_ms,
            battery_pct,
            temperature_c,
            storage_used_pct,
            _json_str(firmware),
            b',"app":' + _json_str(app) if app is not None else b"",
            bytes_up,
            bytes_down,
            rssi_dbm,
            b"true" if charging else b"false",
        )
    out = b'{"v":1,"seq":%d,"ts":%d' % (seq, ts_ms)
    if battery_pct is not None:
        out += b',"battery":%d' % battery_pct
    if temperature_c is not None:
        out += b',"temp_c":' + _json_num(temperature_c)
    if storage_used_pct is not None:
        out += b',"storage_pct":' + _json_num(storage_used_pct)
    if firmware is not None:
        out += b',"fw":' + _json_str(firmware)
    if app is not None:
        out += b',"app":' + _json_str(app)
    out += b',"up":%d,"down":%d' % (bytes_up, bytes_down)
    if rssi_dbm is not None:
        out += b',"rssi":%d' % rssi_dbm
    if charging is not None:
        return out + (b',"charging":true}' if charging else b',"charging":false}')
    return out + b"}"


def encode_telemetry(t: Telemetry) -> bytes:
    """Telemetry as encode_uplink writes it (see telemetry_bytes)."""
    return telemetry_bytes(
        t.seq,
        t.ts_ms,
        t.battery_pct,
        t.temperature_c,
        t.storage_used_pct,
        t.firmware,
        t.app,
        t.bytes_up,
        t.bytes_down,
        t.rssi_dbm,
        t.charging,
    )


def heartbeat_bytes(seq: int, ts_ms: int, rssi_dbm: int | None = None) -> bytes:
    """A heartbeat as encode_uplink writes it (the hot-path twin of telemetry_bytes)."""
    if rssi_dbm is None:
        return b'{"v":1,"seq":%d,"ts":%d}' % (seq, ts_ms)
    return b'{"v":1,"seq":%d,"ts":%d,"rssi":%d}' % (seq, ts_ms, rssi_dbm)


def encode_heartbeat(h: Heartbeat) -> bytes:
    """A heartbeat as encode_uplink writes it."""
    return heartbeat_bytes(h.seq, h.ts_ms, h.rssi_dbm)


def encode_uplink(value: Uplink) -> bytes:
    """The reference encoding of an uplink message (the edge agent, simulators, benchmarks and tests)."""
    if type(value) is Telemetry:
        return encode_telemetry(value)
    if type(value) is Heartbeat:
        return encode_heartbeat(value)
    return _encode_uplink_json(value)


def _encode_uplink_json(value: Uplink) -> bytes:
    body: dict[str, Any] = {"v": PROTOCOL_VERSION}
    if isinstance(value, Telemetry):
        body.update(
            seq=value.seq,
            ts=value.ts_ms,
            battery=value.battery_pct,
            temp_c=value.temperature_c,
            storage_pct=value.storage_used_pct,
            fw=value.firmware,
            app=value.app,
            up=value.bytes_up,
            down=value.bytes_down,
            rssi=value.rssi_dbm,
            charging=value.charging,
        )
    elif isinstance(value, Heartbeat):
        body.update(seq=value.seq, ts=value.ts_ms, rssi=value.rssi_dbm)
    elif isinstance(value, Event):
        body.update(seq=value.seq, ts=value.ts_ms, type=value.type.value, code=value.code, user=value.user)
    elif isinstance(value, Ack):
        body.update(id=value.id, ts=value.ts_ms, accepted=value.accepted, reason=value.reason)
    elif isinstance(value, Result):
        body.update(id=value.id, ts=value.ts_ms, ok=value.ok, code=value.code, detail=value.detail)
    else:
        body.update(state="online" if value.online else "offline", ts=value.ts_ms, reason=value.reason)
    return json.dumps({k: v for k, v in body.items() if v is not None}, separators=(",", ":")).encode()


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
