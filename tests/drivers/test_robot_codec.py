"""Robot codec: byte tables, round trips, rejection counting and resync."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.codecs.cobs import cobs_decode, cobs_encode
from drivers.codecs.crc import crc16_ccitt
from drivers.codecs.robot import (
    MAX_BODY,
    MAX_ENCODED,
    MsgType,
    RobotDecoder,
    RobotFrame,
    decode_config,
    decode_frame,
    encode_config,
    encode_frame,
)
from drivers.errors import FrameError

COBS_TABLE = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
]


@pytest.mark.parametrize(("raw", "encoded"), COBS_TABLE)
def test_cobs_matches_reference_table(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


def test_crc16_check_value() -> None:
    assert crc16_ccitt(b"123456789") == 0x29B1


FRAME_TABLE = [
    # PING, seq 1, no body
    (RobotFrame(MsgType.PING, 1), "00 03 01 02 02 01 01 03 38 03 00"),
    # HELLO seq 0x0102 with session id 0xdeadbeef
    (
        RobotFrame(MsgType.HELLO, 0x0102, bytes.fromhex("deadbeef")),
        "00 05 01 01 01 02 08 04 de ad be ef 0f 3e 00",
    ),
]


@pytest.mark.parametrize(("frame", "wire"), FRAME_TABLE)
def test_robot_frame_byte_table(frame: RobotFrame, wire: str) -> None:
    assert encode_frame(frame).hex(" ") == wire
    assert RobotDecoder().feed(bytes.fromhex(wire)) == [frame]


@given(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=MAX_BODY))
def test_frame_round_trip(mtype: int, seq: int, body: bytes) -> None:
    frame = RobotFrame(mtype, seq, body)
    wire = encode_frame(frame)
    assert 0 not in wire[1:-1]
    assert decode_frame(wire[1:-1]) == frame


@given(
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=64)), max_size=8),
    st.integers(1, 17),
)
def test_stream_decoder_reassembles_any_split(frames: list[tuple[int, int, bytes]], step: int) -> None:
    expected = [RobotFrame(*f) for f in frames]
    wire = b"".join(encode_frame(f) for f in expected)
    dec = RobotDecoder()
    got = []
    for i in range(0, len(wire), step):
        got += dec.feed(wire[i : i + step])
    assert got == expected
    assert dec.rejected_total == 0


@given(st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=40), max_size=10))
def test_config_round_trip(config: dict[str, str]) -> None:
    assert decode_config(encode_config(config)) == config


def test_corrupted_frame_is_rejected_counted_and_next_frame_decodes() -> None:
    good1 = encode_frame(RobotFrame(MsgType.GET_HEALTH, 7))
    bad = bytearray(encode_frame(RobotFrame(MsgType.SET_CONFIG, 8, b"\x01\x03key\x00\x01v")))
    bad[-3] ^= 0x40  # a flipped bit in the CRC trailer
    good2 = encode_frame(RobotFrame(MsgType.PING, 9))
    dec = RobotDecoder()
    frames = dec.feed(good1 + bytes(bad) + good2)
    assert [f.seq for f in frames] == [7, 9]
    assert dec.rejected == {"crc": 1}


def test_garbage_between_frames_is_counted_by_reason_and_skipped() -> None:
    dec = RobotDecoder()
    frames = dec.feed(b"\x00\x05ab\x00" + b"\x00\x02\x01\x00" + encode_frame(RobotFrame(MsgType.PING, 3)))
    assert [f.seq for f in frames] == [3]
    assert dec.rejected == {"cobs": 1, "short": 1}


def test_oversize_run_without_delimiter_is_dropped_and_decoder_resyncs() -> None:
    dec = RobotDecoder()
    assert dec.feed(b"\x07" * (MAX_ENCODED + 10)) == []
    assert dec.feed(b"\x07" * 100) == []
    frames = dec.feed(b"\x00" + encode_frame(RobotFrame(MsgType.PING, 4)))
    assert [f.seq for f in frames] == [4]
    assert dec.rejected == {"oversize": 1}


def test_wrong_version_and_length_are_rejected_with_their_reason() -> None:
    from drivers.codecs.crc import crc16_ccitt as crc

    raw = bytes([2, 2, 0, 1, 0, 0])
    with pytest.raises(FrameError) as err:
        decode_frame(cobs_encode(raw + crc(raw).to_bytes(2, "big")))
    assert err.value.reason == "version"
    raw = bytes([1, 2, 0, 1, 0, 5])
    with pytest.raises(FrameError) as err:
        decode_frame(cobs_encode(raw + crc(raw).to_bytes(2, "big")))
    assert err.value.reason == "length"


def test_encoder_refuses_oversize_body() -> None:
    with pytest.raises(FrameError):
        encode_frame(RobotFrame(MsgType.FW_CHUNK, 1, bytes(MAX_BODY + 1)))


@given(st.binary(max_size=2048), st.integers(1, 64))
def test_decoder_never_raises_on_garbage(data: bytes, step: int) -> None:
    dec = RobotDecoder()
    for i in range(0, len(data), step):
        for frame in dec.feed(data[i : i + step]):
            assert len(frame.body) <= MAX_BODY
