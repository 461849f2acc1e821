"""Robot wire protocol codec: COBS-framed, CRC-16 protected frames (docs/protocol-serial-robot.md).

Decoded frame layout (all integers big-endian):

    version u8 | type u8 | seq u16 | body_len u16 | body | crc16 u16 (over everything before it)

On the wire each frame is `0x00 | COBS(decoded) | 0x00`; the leading delimiter flushes any partial
frame a noisy line left in the receiver.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from enum import IntEnum

from drivers.codecs.cobs import cobs_decode, cobs_encode, cobs_max_encoded_len
from drivers.codecs.crc import crc16_ccitt
from drivers.errors import FrameError

PROTOCOL_VERSION = 1
# A 512-byte body keeps a frame under 50 ms at 115200 baud, so one lost frame costs little to resend.
MAX_BODY = 512
_HEADER = struct.Struct(">BBHH")
_HEADER_LEN = _HEADER.size
_CRC_LEN = 2
MIN_FRAME = _HEADER_LEN + _CRC_LEN
MAX_FRAME = MIN_FRAME + MAX_BODY
# Bytes between delimiters beyond this are garbage (or a hostile peer): drop them without buffering.
MAX_ENCODED = cobs_max_encoded_len(MAX_FRAME)


class MsgType(IntEnum):
    """Message types; a response is the request type | 0x80."""

    HELLO = 0x01
    PING = 0x02
    GET_HEALTH = 0x03
    SET_CONFIG = 0x04
    GET_CONFIG = 0x05
    FW_BEGIN = 0x10
    FW_CHUNK = 0x11
    FW_COMMIT = 0x12
    REBOOT = 0x13
    FW_CONFIRM = 0x14
    NAK = 0x7E
    IDENTITY = 0x81
    PONG = 0x82
    HEALTH = 0x83
    CONFIG_OK = 0x84
    CONFIG = 0x85
    FW_BEGIN_ACK = 0x90
    FW_CHUNK_ACK = 0x91
    FW_COMMIT_ACK = 0x92
    REBOOT_ACK = 0x93
    FW_CONFIRM_ACK = 0x94


RESPONSE_BIT = 0x80


class Status(IntEnum):
    """First byte of every response body."""

    OK = 0
    BAD_REQUEST = 1
    BAD_STATE = 2
    CHUNK_CRC = 3
    OUT_OF_ORDER = 4
    HASH_MISMATCH = 5
    INCOMPLETE = 6
    TOO_LARGE = 7
    BOOT_FAILED = 8
    BUSY = 9


# The highest protocol version this host speaks; HELLO offers it and IDENTITY answers the agreed one.
PROTOCOL_MAX = 1
# FW_CHUNK's data ceiling: a body is at most 512 bytes, and offset u32 + crc32 u32 take 8 of them.
MAX_CHUNK_DATA = MAX_BODY - 8


@dataclass(frozen=True, slots=True)
class RobotFrame:
    """One decoded robot frame."""

    type: int
    seq: int
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        return bool(self.type & RESPONSE_BIT) and self.type != MsgType.NAK


def encode_frame(frame: RobotFrame) -> bytes:
    """Frame -> wire bytes, delimiters included."""
    if len(frame.body) > MAX_BODY:
        raise FrameError("length", f"body of {len(frame.body)} bytes exceeds {MAX_BODY}")
    if not 0 <= frame.seq <= 0xFFFF or not 0 <= frame.type <= 0xFF:
        raise FrameError("field", "seq or type out of range")
    raw = _HEADER.pack(PROTOCOL_VERSION, frame.type, frame.seq, len(frame.body)) + frame.body
    raw += crc16_ccitt(raw).to_bytes(2, "big")
    return b"\x00" + cobs_encode(raw) + b"\x00"


def decode_frame(block: bytes) -> RobotFrame:
    """One COBS block (no delimiters) -> frame; raise FrameError with a bounded reason."""
    if len(block) > MAX_ENCODED:
        raise FrameError("oversize", f"{len(block)} bytes")
    raw = cobs_decode(block)
    if len(raw) < MIN_FRAME:
        raise FrameError("short", f"{len(raw)} bytes")
    if crc16_ccitt(raw[:-_CRC_LEN]) != int.from_bytes(raw[-_CRC_LEN:], "big"):
        raise FrameError("crc")
    version, mtype, seq, length = _HEADER.unpack_from(raw)
    if version != PROTOCOL_VERSION:
        raise FrameError("version", str(version))
    if length != len(raw) - MIN_FRAME:
        raise FrameError("length", f"header says {length}, frame has {len(raw) - MIN_FRAME}")
    return RobotFrame(mtype, seq, bytes(raw[_HEADER_LEN:-_CRC_LEN]))


class RobotDecoder:
    """Stream decoder: `feed(bytes) -> list[RobotFrame]`; bad frames are dropped and counted by reason."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False
        self.rejected: Counter[str] = Counter()
        self.accepted = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def feed(self, data: bytes) -> list[RobotFrame]:
        frames: list[RobotFrame] = []
        for chunk_end in _split_keep(data):
            piece, delimited = chunk_end
            if not self._discarding:
                self._buf += piece
                if len(self._buf) > MAX_ENCODED:
                    # Resync: throw the run away and wait for the next delimiter.
                    self.rejected["oversize"] += 1
                    self._buf.clear()
                    self._discarding = True
            if delimited:
                if self._discarding:
                    self._discarding = False
                elif self._buf:
                    try:
                        frames.append(decode_frame(bytes(self._buf)))
                        self.accepted += 1
                    except FrameError as err:
                        self.rejected[err.reason] += 1
                self._buf.clear()
        return frames


def _split_keep(data: bytes) -> list[tuple[bytes, bool]]:
    """Split on 0x00, marking which pieces ended at a delimiter."""
    parts = data.split(b"\x00")
    return [(p, i < len(parts) - 1) for i, p in enumerate(parts)]


# ---- body helpers (shared by the driver and the simulator) ----


def pack_str8(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise FrameError("field", "string longer than 255 bytes")
    return bytes([len(raw)]) + raw


def pack_str16(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > MAX_BODY:
        raise FrameError("field", "value too long")
    return len(raw).to_bytes(2, "big") + raw


class BodyReader:
    """Bounds-checked reader over a frame body; every overrun is a FrameError('body')."""

    def __init__(self, body: bytes) -> None:
        self._b = body
        self._i = 0

    def take(self, n: int) -> bytes:
        if self._i + n > len(self._b):
            raise FrameError("body", "truncated body")
        out = self._b[self._i : self._i + n]
        self._i += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def i8(self) -> int:
        return int.from_bytes(self.take(1), "big", signed=True)

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def str8(self) -> str:
        return self._text(self.take(self.u8()))

    def str16(self) -> str:
        return self._text(self.take(self.u16()))

    def rest(self) -> bytes:
        out = self._b[self._i :]
        self._i = len(self._b)
        return out

    def done(self) -> bool:
        return self._i == len(self._b)

    @staticmethod
    def _text(raw: bytes) -> str:
        try:
            return raw.decode()
        except UnicodeDecodeError as err:
            raise FrameError("body", "invalid utf-8") from err


def encode_config(config: dict[str, str]) -> bytes:
    """Canonical config encoding: count u8, then sorted (key str8, value str16) pairs."""
    if len(config) > 255:
        raise FrameError("field", "too many config keys")
    out = bytearray([len(config)])
    for key in sorted(config):
        out += pack_str8(key) + pack_str16(config[key])
    return bytes(out)


def decode_config(body: bytes) -> dict[str, str]:
    r = BodyReader(body)
    count = r.u8()
    config = {}
    for _ in range(count):
        key = r.str8()
        config[key] = r.str16()
    if not r.done():
        raise FrameError("body", "trailing bytes after config")
    return config
