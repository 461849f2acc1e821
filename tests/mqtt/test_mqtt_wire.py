"""The v1 wire protocol: topic building/parsing and payload decoding never crash and name a reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from fleet.domain import wire
from fleet.domain.wire import (
    MAX_UPLINK_BYTES,
    Channel,
    Heartbeat,
    InvalidIdentity,
    Reason,
    Rejection,
    Telemetry,
    Topics,
    decode_uplink,
    fields,
    uplink_decoding,
)

TS = 1_788_764_400_000
# A screen_session event (protocol 5.3.1): ts, start, use_s, end, then any extra fields.
SCREEN = b'{"v":1,"seq":1,"ts":%d,"type":"screen_session","start":%d,"use_s":%d,"end":%s%s}'


def test_topic_round_trip_per_school_and_device() -> None:
    t = Topics("labfleet")
    topic = t.topic("S001", "TAB-000123", Channel.TELEMETRY)
    assert topic == "labfleet/v1/S001/TAB-000123/telemetry"
    assert t.parse(topic) == wire.TopicRef("S001", "TAB-000123", Channel.TELEMETRY)


@pytest.mark.parametrize(
    "bad", ["a+b", "a#b", "a/b", "+", "#", "", "$SYS", " x", "x y", "a\x00", "é", "x" * 65]
)
def test_identities_with_wildcards_slashes_or_odd_characters_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidIdentity):
        Topics().topic("S001", bad, Channel.TELEMETRY)
    with pytest.raises(InvalidIdentity):
        Topics().topic(bad, "TAB-1", Channel.TELEMETRY)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("other/v1/S/D/telemetry", Reason.BAD_TOPIC),
        ("labfleet/v2/S/D/telemetry", Reason.BAD_TOPIC),
        ("labfleet/v1/S/D/x/telemetry", Reason.BAD_TOPIC),
        ("labfleet/v1/S/D/nope", Reason.BAD_TOPIC),
        ("labfleet/v1/S/$D/telemetry", Reason.INVALID_IDENTITY),
        ("labfleet/v1/S/D+/telemetry", Reason.INVALID_IDENTITY),
        ("labfleet/v1/" + "S" * 300 + "/D/telemetry", Reason.BAD_TOPIC),
    ],
)
def test_parse_refuses_foreign_topics_with_a_reason(topic: str, reason: Reason) -> None:
    got = Topics().parse(topic)
    assert isinstance(got, Rejection) and got.reason == reason


def test_full_telemetry_decodes_to_typed_value() -> None:
    raw = (
        b'{"v":1,"seq":7,"ts":%d,"battery":81,"charging":false,"temp_c":38.5,"storage_pct":61.2,'
        b'"fw":"2.4.1","app":"edu.reader","up":5,"down":6,"rssi":-58,"future_field":1}' % TS
    )
    assert decode_uplink(Channel.TELEMETRY, raw) == Telemetry(
        7, TS, 81, 38.5, 61.2, "2.4.1", "edu.reader", 5, 6, -58, False
    )


@pytest.mark.parametrize(
    ("channel", "payload", "reason"),
    [
        (Channel.TELEMETRY, b"{", Reason.MALFORMED_JSON),
        (Channel.TELEMETRY, b"\xff\xfe", Reason.MALFORMED_JSON),
        (Channel.TELEMETRY, b"[1]", Reason.SCHEMA),
        (Channel.TELEMETRY, b'{"seq":1}', Reason.UNSUPPORTED_VERSION),
        (Channel.TELEMETRY, b'{"v":true,"seq":1,"ts":%d}' % TS, Reason.UNSUPPORTED_VERSION),
        (Channel.TELEMETRY, b'{"v":1,"seq":true,"ts":%d}' % TS, Reason.SCHEMA),
        (Channel.TELEMETRY, b'{"v":1,"seq":0,"ts":%d}' % TS, Reason.SCHEMA),
        (Channel.TELEMETRY, b'{"v":1,"seq":1,"ts":5}', Reason.SCHEMA),
        (Channel.TELEMETRY, b'{"v":1,"seq":1,"ts":%d,"battery":101}' % TS, Reason.SCHEMA),
        # NaN is not JSON (RFC 8259); an integer beyond 64 bits reads as a number, not an integer.
        (Channel.TELEMETRY, b'{"v":1,"seq":1,"ts":%d,"temp_c":NaN}' % TS, Reason.MALFORMED_JSON),
        (Channel.TELEMETRY, b'{"v":1,"seq":1,"ts":%d,"up":1%s}' % (TS, b"0" * 30), Reason.SCHEMA),
        (Channel.TELEMETRY, b'{"v":1,"seq":1,"ts":%d,"fw":""}' % TS, Reason.SCHEMA),
        (Channel.EVENT, b'{"v":1,"seq":1,"ts":%d,"type":"error"}' % TS, Reason.SCHEMA),
        (Channel.EVENT, b'{"v":1,"seq":1,"ts":%d,"type":"login"}' % TS, Reason.SCHEMA),
        (Channel.ACK, b'{"v":1,"id":"a/b","ts":%d,"accepted":true}' % TS, Reason.SCHEMA),
        # screen_session (5.3.1): start after ts, more use than time passed, an unknown end, a bad limit,
        # start over 7 days back, a missing field.
        (Channel.EVENT, SCREEN % (TS, TS + 1, 1, b'"idle"', b""), Reason.SCHEMA),
        (Channel.EVENT, SCREEN % (TS, TS - 60_000, 61, b'"idle"', b""), Reason.SCHEMA),
        (Channel.EVENT, SCREEN % (TS, TS - 60_000, 60, b'"nap"', b""), Reason.SCHEMA),
        (Channel.EVENT, SCREEN % (TS, TS - 60_000, 60, b'"break"', b',"session_min":0'), Reason.SCHEMA),
        (Channel.EVENT, SCREEN % (TS, TS - 8 * 86_400_000, 60, b'"idle"', b""), Reason.SCHEMA),
        (
            Channel.EVENT,
            b'{"v":1,"seq":1,"ts":%d,"type":"screen_session","use_s":5,"end":"idle"}' % TS,
            Reason.SCHEMA,
        ),
        (Channel.STATUS, b'{"v":1,"state":"maybe"}', Reason.SCHEMA),
        (Channel.CMD, b'{"v":1}', Reason.BAD_TOPIC),
        (Channel.HEARTBEAT, b"{" + b" " * MAX_UPLINK_BYTES + b"}", Reason.OVERSIZED),
    ],
)
def test_bad_payloads_are_rejected_with_their_reason(
    channel: Channel, payload: bytes, reason: Reason
) -> None:
    got = decode_uplink(channel, payload)
    assert isinstance(got, Rejection), got
    assert got.reason == reason


valid_screen_sessions = st.builds(
    lambda seq, start, use_s, lag, end, slim, dlim: wire.Event(
        seq,
        start + 1000 * use_s + lag,
        wire.EventType.SCREEN_SESSION,
        screen=wire.ScreenSession(start, use_s, end, slim, dlim),
    ),
    st.integers(1, wire.MAX_SEQ),
    st.integers(wire.TS_MIN_MS, wire.TS_MAX_MS - 2 * 86_400_000),
    st.integers(1, 86_400),
    st.integers(0, 86_400_000),
    st.sampled_from(wire.ScreenEnd),
    st.none() | st.integers(1, 480),
    st.none() | st.integers(1, 1440),
)


@given(valid_screen_sessions)
def test_screen_session_encode_decode_round_trip(e: wire.Event) -> None:
    assert decode_uplink(Channel.EVENT, wire.encode_uplink(e)) == e


def test_the_documented_screen_session_example_decodes() -> None:
    got = decode_uplink(
        Channel.EVENT,
        b'{"v":1,"seq":2215,"ts":1788768000000,"type":"screen_session","start":1788765600000,"use_s":2400,'
        b'"end":"break","session_min":40,"daily_min":180}',
    )
    assert got == wire.Event(
        2215,
        1788768000000,
        wire.EventType.SCREEN_SESSION,
        screen=wire.ScreenSession(1788765600000, 2400, wire.ScreenEnd.BREAK, 40, 180),
    )


def test_login_user_is_kept_out_of_repr() -> None:
    ev = decode_uplink(Channel.EVENT, b'{"v":1,"seq":1,"ts":%d,"type":"login","user":"alice.w"}' % TS)
    assert isinstance(ev, wire.Event) and ev.user == "alice.w"
    assert "alice" not in repr(ev)


def test_policy_validation() -> None:
    p = wire.parse_policy({"session_minutes": 40, "daily_minutes": 120, "allowed_apps": ["edu.reader"]})
    assert p == wire.Policy(40, 120, 10, ("edu.reader",))
    for bad in (
        {"session_minutes": 0, "daily_minutes": 5},
        {"session_minutes": 50, "daily_minutes": 40},
        {"session_minutes": 5, "daily_minutes": 5, "allowed_apps": "x"},
    ):
        with pytest.raises(ValueError):
            wire.parse_policy(bad)


def test_command_encoding_round_trips() -> None:
    cmd = wire.Command(
        "0b7a-11", wire.CommandName.SET_POLICY, TS, TS + 60_000, wire.policy_args(wire.Policy(40, 120))
    )
    assert wire.decode_downlink(wire.encode_command(cmd)) == cmd


valid_telemetry = st.builds(
    Telemetry,
    seq=st.integers(1, wire.MAX_SEQ),
    ts_ms=st.integers(wire.TS_MIN_MS, wire.TS_MAX_MS),
    battery_pct=st.none() | st.integers(0, 100),
    temperature_c=st.none() | st.floats(-40, 150),
    storage_used_pct=st.none() | st.floats(0, 100),
    firmware=st.none() | st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64),
    app=st.none() | st.from_regex(r"[a-z.]{1,20}", fullmatch=True),
    bytes_up=st.integers(0, 10**10),
    bytes_down=st.integers(0, 10**10),
    rssi_dbm=st.none() | st.integers(-130, 0),
    charging=st.none() | st.booleans(),
)


@given(valid_telemetry)
def test_telemetry_encode_decode_round_trip(t: Telemetry) -> None:
    assert decode_uplink(Channel.TELEMETRY, wire.encode_uplink(t)) == t


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "v",
        "seq",
        "ts",
        "battery",
        "temp_c",
        "storage_pct",
        "fw",
        "app",
        "up",
        "down",
        "rssi",
        "charging",
        "type",
        "code",
        "user",
        "id",
        "accepted",
        "ok",
        "reason",
        "detail",
        "state",
    ]
)
near_valid = st.dictionaries(field_names, json_values, max_size=10).map(lambda d: {"v": 1, **d})


def _payloads() -> st.SearchStrategy[bytes]:
    good = valid_telemetry.map(wire.encode_uplink)
    return st.one_of(
        st.binary(max_size=300),
        near_valid.map(lambda d: json.dumps(d).encode()),
        st.tuples(good, st.integers(0, 200)).map(lambda gt: gt[0][: gt[1]]),  # truncated
        good.map(lambda b: b + b" " * MAX_UPLINK_BYTES),  # oversized
        json_values.map(lambda v: json.dumps(v).encode()),  # wrong top-level types
    )


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(list(Channel)), _payloads())
def test_fuzzed_payloads_never_crash_and_each_is_counted_under_a_reason(
    channel: Channel, payload: bytes
) -> None:
    got = decode_uplink(channel, payload)
    key = got.reason.value if isinstance(got, Rejection) else "ok"
    assert key in {"ok", *wire.REASONS}


@pytest.mark.parametrize("reason", [Reason.MALFORMED_JSON, Reason.SCHEMA, Reason.OVERSIZED])
def test_the_fuzz_generators_reach_each_main_rejection_path(reason: Reason) -> None:
    """The payload generator finds a payload rejected for `reason` (on its own, whatever ran before)."""

    def rejected_for_reason(example: tuple[Channel, bytes]) -> bool:
        got = decode_uplink(*example)
        return isinstance(got, Rejection) and got.reason is reason

    found = find(
        st.tuples(st.sampled_from(list(Channel)), _payloads()),
        rejected_for_reason,
        settings=settings(max_examples=2000, database=None),
    )
    assert rejected_for_reason(found)


def test_heartbeat_minimal() -> None:
    assert decode_uplink(Channel.HEARTBEAT, b'{"v":1,"seq":3,"ts":%d}' % TS) == Heartbeat(3, TS)


# Near-bound and wrong-typed values for every telemetry field, each tried alone in an otherwise valid message.
_ODD_VALUES = [
    None,
    True,
    False,
    0,
    1,
    -1,
    100,
    101,
    -40,
    -41,
    150,
    151,
    -130,
    -131,
    2**53 - 1,
    2**53,
    wire.TS_MIN_MS - 1,
    wire.TS_MIN_MS,
    wire.TS_MAX_MS,
    wire.TS_MAX_MS + 1,
    wire.MAX_BYTES_DELTA,
    wire.MAX_BYTES_DELTA + 1,
    0.0,
    36.5,
    -40.0,
    -40.5,
    150.0,
    150.5,
    100.0,
    100.5,
    -0.5,
    "",
    "2.4.1",
    "x" * 64,
    "x" * 65,
    "y" * 128,
    "y" * 129,
    "a\nb",
    "\x00",
    "\u00a0",
    [],
    {},
    "77",
]
_FULL_TELEMETRY = {
    "v": 1,
    "seq": 3,
    "ts": TS,
    "battery": 50,
    "temp_c": 30.5,
    "storage_pct": 40.0,
    "fw": "2.4.1",
    "app": "org.lab.reader",
    "up": 10,
    "down": 20,
    "rssi": -60,
    "charging": False,
}


@pytest.mark.parametrize("field", [k for k in _FULL_TELEMETRY if k != "v"])
@pytest.mark.parametrize("value", _ODD_VALUES, ids=repr)
def test_telemetry_fast_path_accepts_exactly_what_the_field_checks_accept(field: str, value: object) -> None:
    obj = dict(_FULL_TELEMETRY, **{field: value})
    try:
        expected: object = uplink_decoding._telemetry_checked(obj)
    except fields._Bad as err:
        expected = ("refused", str(err))
    try:
        got: object = uplink_decoding._telemetry(obj)
    except fields._Bad as err:
        got = ("refused", str(err))
    assert got == expected
