"""Reading what devices send: one decoder per uplink channel, and `decode_uplink`, the ingest's entry.

The ingest hot path calls `decode_uplink` per message, so validation is hand-written rather than pydantic
(a few microseconds per payload), and telemetry has an inline fast path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fleet.domain.wire.fields import _Bad, _bool, _correlation, _int, _load, _num, _text
from fleet.domain.wire.limits import (
    BATTERY_PCT_MAX,
    BATTERY_PCT_MIN,
    DAILY_MINUTES_MAX,
    MAX_BYTES_DELTA,
    MAX_CODE_TEXT,
    MAX_SEQ,
    MAX_SHORT_TEXT,
    MAX_UPLINK_BYTES,
    RSSI_DBM_MAX,
    RSSI_DBM_MIN,
    SCREEN_SESSION_MAX_AGE_MS,
    SCREEN_USE_S_MAX,
    SESSION_MINUTES_MAX,
    STORAGE_PCT_MAX,
    STORAGE_PCT_MIN,
    TEMPERATURE_C_MAX,
    TEMPERATURE_C_MIN,
    TS_MAX_MS,
    TS_MIN_MS,
)
from fleet.domain.wire.messages import Ack, Event, Heartbeat, Result, ScreenSession, Status, Telemetry, Uplink
from fleet.domain.wire.refusals import Reason, Rejection
from fleet.domain.wire.vocabulary import Channel, EventType, ScreenEnd


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
    ts = _int(o, "ts", TS_MIN_MS, TS_MAX_MS)
    return Event(
        seq=_int(o, "seq", 1, MAX_SEQ),
        ts_ms=ts,
        type=etype,
        code=_text(o, "code", required=etype == EventType.ERROR, max_len=MAX_CODE_TEXT),
        user=user,
        screen=_screen_session(o, ts) if etype == EventType.SCREEN_SESSION else None,
    )


_SCREEN_ENDS = frozenset(e.value for e in ScreenEnd)


def _screen_session(o: dict[str, Any], ts: int) -> ScreenSession:
    start = _int(o, "start", TS_MIN_MS, TS_MAX_MS)
    use_s = _int(o, "use_s", 1, SCREEN_USE_S_MAX)
    end = o.get("end")
    if type(end) is not str or end not in _SCREEN_ENDS:
        raise _Bad("end must be one of " + ", ".join(e.value for e in ScreenEnd))
    if not ts - SCREEN_SESSION_MAX_AGE_MS <= start <= ts:
        raise _Bad("start must be before ts and at most 7 days before it")
    if use_s * 1000 >= ts - start + 1000:  # more use than time passed, with the last second rounded up
        raise _Bad("use_s must not exceed the seconds from start to ts")
    session_min = _int(o, "session_min", 1, SESSION_MINUTES_MAX, required=False)
    daily_min = _int(o, "daily_min", 1, DAILY_MINUTES_MAX, required=False)
    return ScreenSession(start, use_s, ScreenEnd(end), session_min, daily_min)


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
