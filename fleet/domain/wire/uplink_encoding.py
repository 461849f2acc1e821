"""Writing device messages: the reference encoder, and byte-exact fast encoders for the messages every
terminal sends every minute (the edge agent, simulators and benchmarks send millions)."""

from __future__ import annotations

import functools
import json
from typing import Any

from fleet.domain.wire.limits import PROTOCOL_VERSION
from fleet.domain.wire.messages import Ack, Event, Heartbeat, Result, Telemetry, Uplink


@functools.lru_cache(maxsize=1024)
def _json_str(value: str) -> bytes:
    """A JSON string literal, cached: firmware versions and app names repeat across a fleet."""
    return json.dumps(value).encode()


def _json_num(value: float) -> bytes:
    # json.dumps writes a float as its repr, an int (and a bool, which is not one here) with %d.
    return repr(value).encode() if type(value) is float else b"%d" % value


# Every telemetry body starts with the protocol version, the sequence number and the timestamp.
_TELEMETRY_HEAD = b'{"v":1,"seq":%d,"ts":%d'
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
    out = _TELEMETRY_HEAD % (seq, ts_ms)
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


class TelemetryTemplate:
    """Telemetry whose fields other than `seq` and `ts` never change, written byte for byte as
    telemetry_bytes writes it at the cost of one `%` format: the encoded tail is cached once (a benchmark's
    publisher sends the same reading millions of times, on the cores the service it measures runs on)."""

    __slots__ = ("_tail",)

    def __init__(
        self,
        battery_pct: int | None,
        temperature_c: float | None,
        storage_used_pct: float | None,
        firmware: str | None,
        app: str | None,
        bytes_up: int,
        bytes_down: int,
        rssi_dbm: int | None,
        charging: bool | None,
    ) -> None:
        head = _TELEMETRY_HEAD % (0, 0)
        body = telemetry_bytes(
            0,
            0,
            battery_pct,
            temperature_c,
            storage_used_pct,
            firmware,
            app,
            bytes_up,
            bytes_down,
            rssi_dbm,
            charging,
        )
        self._tail = body[len(head) :]

    def __call__(self, seq: int, ts_ms: int) -> bytes:
        return _TELEMETRY_HEAD % (seq, ts_ms) + self._tail


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
        if value.screen is not None:
            s = value.screen
            body.update(
                start=s.start_ms,
                use_s=s.use_s,
                end=s.end.value,
                session_min=s.session_min,
                daily_min=s.daily_min,
            )
    elif isinstance(value, Ack):
        body.update(id=value.id, ts=value.ts_ms, accepted=value.accepted, reason=value.reason)
    elif isinstance(value, Result):
        body.update(id=value.id, ts=value.ts_ms, ok=value.ok, code=value.code, detail=value.detail)
    else:
        body.update(state="online" if value.online else "offline", ts=value.ts_ms, reason=value.reason)
    return json.dumps({k: v for k, v in body.items() if v is not None}, separators=(",", ":")).encode()
