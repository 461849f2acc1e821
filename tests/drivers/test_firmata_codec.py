"""Firmata and STK500 codecs: byte tables, round trips, resync after garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.codecs import firmata as fm
from drivers.codecs import stk500
from drivers.errors import FrameError

TABLE = [
    (fm.VersionReport(2, 5), "f9 02 05", True),
    (fm.VersionQuery(), "f9", False),
    (fm.AnalogValue(0, 1000), "e0 68 07", True),
    (fm.ReportAnalog(3, True), "c3 01", False),
    (fm.SetPinMode(13, fm.PinMode.OUTPUT), "f4 0d 01", False),
    (fm.SystemReset(), "ff", False),
    (fm.Sysex(fm.REPORT_FIRMWARE), "f0 79 f7", False),
    (fm.firmware_report(2, 5, "SF"), "f0 79 02 05 53 00 46 00 f7", True),
    (fm.Sysex(fm.CAPABILITY_QUERY), "f0 6b f7", False),
    (fm.capability_response((((0, 1), (1, 1)), ((2, 10),))), "f0 6c 00 01 01 01 7f 02 0a 7f f7", True),
    (fm.pin_state_response(13, 1, 200), "f0 6e 0d 01 48 01 f7", True),
]


@pytest.mark.parametrize(("msg", "wire", "from_device"), TABLE)
def test_firmata_byte_table(msg: fm.Message, wire: str, from_device: bool) -> None:
    assert fm.encode(msg).hex(" ") == wire
    assert fm.FirmataDecoder(from_device=from_device).feed(bytes.fromhex(wire)) == [msg]


seven = st.integers(0, 0x7F)
device_msgs = st.one_of(
    st.builds(fm.VersionReport, seven, seven),
    st.builds(fm.AnalogValue, st.integers(0, 15), st.integers(0, 0x3FFF)),
    st.builds(fm.DigitalPort, st.integers(0, 15), st.integers(0, 0x3FFF)),
    st.builds(fm.Sysex, seven, st.binary(max_size=64).map(lambda b: bytes(x & 0x7F for x in b))),
)


@given(st.lists(device_msgs, max_size=10), st.integers(1, 9))
def test_decoder_round_trips_any_split(msgs: list[fm.Message], step: int) -> None:
    wire = b"".join(fm.encode(m) for m in msgs)
    dec = fm.FirmataDecoder(from_device=True)
    got: list[fm.Message] = []
    for i in range(0, len(wire), step):
        got += dec.feed(wire[i : i + step])
    assert got == msgs and not dec.rejected


@given(st.text(max_size=30))
def test_firmata_strings_round_trip(text: str) -> None:
    assert fm.unpack_string(fm.pack_string(text)) == text


def test_garbage_is_counted_and_next_message_decodes() -> None:
    dec = fm.FirmataDecoder(from_device=True)
    msgs = dec.feed(bytes.fromhex("05 06 e0 68 f9 02 05 f0 79 02 f2 e1 01 02"))
    assert msgs == [fm.VersionReport(2, 5), fm.AnalogValue(1, 0x101)]
    assert dec.rejected == {"stray": 2, "interrupted": 2, "unknown_command": 1}


def test_oversize_sysex_is_dropped() -> None:
    dec = fm.FirmataDecoder(from_device=True)
    assert dec.feed(b"\xf0\x71" + b"\x01" * (fm.MAX_SYSEX + 5) + b"\xf7\xf9\x02\x05") == [
        fm.VersionReport(2, 5)
    ]
    assert dec.rejected["oversize"] == 1


def test_malformed_capability_response_is_a_frame_error() -> None:
    with pytest.raises(FrameError):
        fm.parse_capability_response(fm.Sysex(fm.CAPABILITY_RESPONSE, b"\x00\x01\x02"))


def test_stk500_byte_table() -> None:
    assert stk500.get_sync() == b"\x30\x20"
    assert stk500.load_address(0x100) == b"\x55\x80\x00\x20"
    assert stk500.prog_page(b"\xaa\xbb") == b"\x64\x00\x02\x46\xaa\xbb\x20"
    assert stk500.read_page(128) == b"\x74\x00\x80\x46\x20"
    assert stk500.parse_answer(b"\x14\x1e\x95\x0f\x10") == b"\x1e\x95\x0f"
    with pytest.raises(FrameError):
        stk500.parse_answer(b"\x15\x10")


@given(st.binary(max_size=4096), st.booleans())
def test_firmata_decoder_never_raises_on_garbage(data: bytes, from_device: bool) -> None:
    dec = fm.FirmataDecoder(from_device=from_device)
    for msg in dec.feed(data):
        assert fm.encode(msg)  # whatever it accepted is a well-formed message


def test_intel_hex_byte_table_and_profile_artifact() -> None:
    from drivers.codecs import ihex

    assert ihex.encode_ihex(bytes([0x0C, 0x94, 0x34, 0x00])) == b":040000000C94340028\n:00000001FF\n"
    assert ihex.parse_ihex(b":040000000C94340028\n:00000001FF\n") == bytes([0x0C, 0x94, 0x34, 0x00])
    # Gaps are erased flash; an extended linear address moves the base.
    assert ihex.parse_ihex(b":0100020055A8\n:00000001FF\n") == b"\xff\xff\x55"
    from pathlib import Path

    art = Path(__file__).parents[2] / "firmware_profiles/artifacts/kit-uno-firmata-2.5.1.hex"
    assert b"LFFW/StandardFirmata-2.5.1.ino/2.5\x00" in ihex.parse_ihex(art.read_bytes())


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b":040000000C94340029\n:00000001FF\n", "checksum"),
        (b":040000000C94340028\n", "end-of-file"),
        (b"040000000C943400F0\n:00000001FF\n", "':'"),
        (b":05000000 0C94340028\n:00000001FF\n", "length"),
        (b":0400000\n:00000001FF\n", "hex digits"),
    ],
)
def test_damaged_intel_hex_is_a_frame_error_naming_the_problem(text: bytes, reason: str) -> None:
    from drivers.codecs import ihex

    with pytest.raises(FrameError, match=reason):
        ihex.parse_ihex(text)


@given(st.binary(max_size=3000))
def test_intel_hex_round_trip(data: bytes) -> None:
    from drivers.codecs import ihex

    assert ihex.parse_ihex(ihex.encode_ihex(data)) == data
