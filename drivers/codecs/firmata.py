"""Firmata protocol codec (the protocol StandardFirmata speaks), both directions.

Firmata has no checksum: resynchronisation relies on command bytes having the top bit set and
data bytes not. A command byte arriving mid-message aborts that message (counted as
"interrupted"); stray data bytes are counted as "stray".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import IntEnum

from drivers.errors import FrameError

DIGITAL_MESSAGE = 0x90
ANALOG_MESSAGE = 0xE0
REPORT_ANALOG = 0xC0
REPORT_DIGITAL = 0xD0
SET_PIN_MODE = 0xF4
SET_DIGITAL_PIN_VALUE = 0xF5
REPORT_VERSION = 0xF9
SYSTEM_RESET = 0xFF
START_SYSEX = 0xF0
END_SYSEX = 0xF7

ANALOG_MAPPING_QUERY = 0x69
ANALOG_MAPPING_RESPONSE = 0x6A
CAPABILITY_QUERY = 0x6B
CAPABILITY_RESPONSE = 0x6C
PIN_STATE_QUERY = 0x6D
PIN_STATE_RESPONSE = 0x6E
STRING_DATA = 0x71
REPORT_FIRMWARE = 0x79
SAMPLING_INTERVAL = 0x7A

# StandardFirmata's own sysex buffer is 64 bytes inbound; responses (a Mega's capability list)
# reach ~600 bytes. Anything past this is garbage and is dropped.
MAX_SYSEX = 2048


class PinMode(IntEnum):
    INPUT = 0x00
    OUTPUT = 0x01
    ANALOG = 0x02
    PWM = 0x03
    SERVO = 0x04
    SHIFT = 0x05
    I2C = 0x06
    ONEWIRE = 0x07
    STEPPER = 0x08
    ENCODER = 0x09
    SERIAL = 0x0A
    PULLUP = 0x0B


# ---- messages -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VersionQuery:
    pass


@dataclass(frozen=True, slots=True)
class VersionReport:
    major: int
    minor: int


@dataclass(frozen=True, slots=True)
class SystemReset:
    pass


@dataclass(frozen=True, slots=True)
class AnalogValue:
    channel: int
    value: int  # 14 bits


@dataclass(frozen=True, slots=True)
class DigitalPort:
    port: int
    mask: int  # 14 bits (8 used)


@dataclass(frozen=True, slots=True)
class ReportAnalog:
    channel: int
    enable: bool


@dataclass(frozen=True, slots=True)
class ReportDigital:
    port: int
    enable: bool


@dataclass(frozen=True, slots=True)
class SetPinMode:
    pin: int
    mode: int


@dataclass(frozen=True, slots=True)
class SetDigitalPinValue:
    pin: int
    value: int


@dataclass(frozen=True, slots=True)
class Sysex:
    """Any sysex message; `data` is the 7-bit payload between the command and END_SYSEX."""

    command: int
    data: bytes = b""


Message = (
    VersionQuery
    | VersionReport
    | SystemReset
    | AnalogValue
    | DigitalPort
    | ReportAnalog
    | ReportDigital
    | SetPinMode
    | SetDigitalPinValue
    | Sysex
)


def _7(value: int) -> bytes:
    """A 14-bit value as two 7-bit bytes, LSB first."""
    return bytes([value & 0x7F, (value >> 7) & 0x7F])


def encode(msg: Message) -> bytes:
    if isinstance(msg, VersionQuery):
        return bytes([REPORT_VERSION])
    if isinstance(msg, VersionReport):
        return bytes([REPORT_VERSION, msg.major & 0x7F, msg.minor & 0x7F])
    if isinstance(msg, SystemReset):
        return bytes([SYSTEM_RESET])
    if isinstance(msg, AnalogValue):
        return bytes([ANALOG_MESSAGE | (msg.channel & 0x0F)]) + _7(msg.value)
    if isinstance(msg, DigitalPort):
        return bytes([DIGITAL_MESSAGE | (msg.port & 0x0F)]) + _7(msg.mask)
    if isinstance(msg, ReportAnalog):
        return bytes([REPORT_ANALOG | (msg.channel & 0x0F), int(msg.enable)])
    if isinstance(msg, ReportDigital):
        return bytes([REPORT_DIGITAL | (msg.port & 0x0F), int(msg.enable)])
    if isinstance(msg, SetPinMode):
        return bytes([SET_PIN_MODE, msg.pin & 0x7F, msg.mode & 0x7F])
    if isinstance(msg, SetDigitalPinValue):
        return bytes([SET_DIGITAL_PIN_VALUE, msg.pin & 0x7F, msg.value & 0x7F])
    if isinstance(msg, Sysex):
        if any(b & 0x80 for b in msg.data) or msg.command & 0x80:
            raise FrameError("sysex", "sysex payload must be 7-bit")
        return bytes([START_SYSEX, msg.command]) + msg.data + bytes([END_SYSEX])
    raise TypeError(f"not a Firmata message: {msg!r}")


# ---- sysex payload helpers ------------------------------------------------------------------


def pack_string(text: str) -> bytes:
    """Firmata strings: each 8-bit byte as two 7-bit bytes, LSB first."""
    out = bytearray()
    for byte in text.encode():
        out += _7(byte)
    return bytes(out)


def unpack_string(data: bytes) -> str:
    if len(data) % 2:
        raise FrameError("sysex", "odd-length string payload")
    raw = bytes((data[i] | (data[i + 1] << 7)) & 0xFF for i in range(0, len(data), 2))
    return raw.decode(errors="replace")


def firmware_report(major: int, minor: int, name: str) -> Sysex:
    return Sysex(REPORT_FIRMWARE, bytes([major, minor]) + pack_string(name))


def parse_firmware_report(msg: Sysex) -> tuple[int, int, str]:
    if msg.command != REPORT_FIRMWARE or len(msg.data) < 2:
        raise FrameError("sysex", "not a firmware report")
    return msg.data[0], msg.data[1], unpack_string(msg.data[2:])


def capability_response(pins: tuple[tuple[tuple[int, int], ...], ...]) -> Sysex:
    out = bytearray()
    for modes in pins:
        for mode, resolution in modes:
            out += bytes([mode, resolution])
        out.append(0x7F)
    return Sysex(CAPABILITY_RESPONSE, bytes(out))


def parse_capability_response(msg: Sysex) -> tuple[tuple[tuple[int, int], ...], ...]:
    if msg.command != CAPABILITY_RESPONSE:
        raise FrameError("sysex", "not a capability response")
    pins: list[tuple[tuple[int, int], ...]] = []
    cur: list[tuple[int, int]] = []
    data = msg.data
    i = 0
    while i < len(data):
        if data[i] == 0x7F:
            pins.append(tuple(cur))
            cur = []
            i += 1
            continue
        if i + 1 >= len(data):
            raise FrameError("sysex", "truncated capability entry")
        cur.append((data[i], data[i + 1]))
        i += 2
    if cur:
        raise FrameError("sysex", "capability list not terminated")
    return tuple(pins)


def analog_mapping_response(channels: tuple[int | None, ...]) -> Sysex:
    return Sysex(ANALOG_MAPPING_RESPONSE, bytes(0x7F if c is None else c for c in channels))


def parse_analog_mapping(msg: Sysex) -> tuple[int | None, ...]:
    if msg.command != ANALOG_MAPPING_RESPONSE:
        raise FrameError("sysex", "not an analog mapping response")
    return tuple(None if b == 0x7F else b for b in msg.data)


def pin_state_response(pin: int, mode: int, state: int) -> Sysex:
    out = bytearray([pin, mode])
    while True:
        out.append(state & 0x7F)
        state >>= 7
        if not state:
            break
    return Sysex(PIN_STATE_RESPONSE, bytes(out))


def parse_pin_state(msg: Sysex) -> tuple[int, int, int]:
    if msg.command != PIN_STATE_RESPONSE or len(msg.data) < 3:
        raise FrameError("sysex", "not a pin state response")
    state = 0
    for i, b in enumerate(msg.data[2:]):
        state |= b << (7 * i)
    return msg.data[0], msg.data[1], state


def sampling_interval(ms: int) -> Sysex:
    return Sysex(SAMPLING_INTERVAL, _7(ms))


# ---- decoder ------------------------------------------------------------------------------


class FirmataDecoder:
    """Stream decoder. `from_device=True` parses what a board sends, False what a host sends."""

    def __init__(self, *, from_device: bool) -> None:
        self.from_device = from_device
        self.rejected: Counter[str] = Counter()
        self._cmd: int | None = None
        self._need = 0
        self._data = bytearray()
        self._in_sysex = False
        self.bytes_seen = 0  # every byte fed, good or not (tells a silent board from a noisy line)

    def _data_len(self, cmd: int) -> int | None:
        high = cmd & 0xF0
        if high in (DIGITAL_MESSAGE, ANALOG_MESSAGE):
            return 2
        if high in (REPORT_ANALOG, REPORT_DIGITAL):
            return None if self.from_device else 1
        if cmd == REPORT_VERSION:
            return 2 if self.from_device else 0
        if cmd in (SET_PIN_MODE, SET_DIGITAL_PIN_VALUE):
            return None if self.from_device else 2
        if cmd == SYSTEM_RESET:
            return None if self.from_device else 0
        return None

    def feed(self, data: bytes) -> list[Message]:
        self.bytes_seen += len(data)
        out: list[Message] = []
        for byte in data:
            if self._in_sysex:
                if byte == END_SYSEX:
                    self._in_sysex = False
                    if self._data:
                        out.append(Sysex(self._data[0], bytes(self._data[1:])))
                    else:
                        self.rejected["sysex_empty"] += 1
                    self._data = bytearray()
                elif byte & 0x80:
                    self.rejected["interrupted"] += 1
                    self._in_sysex = False
                    self._data = bytearray()
                    self._start(byte, out)
                elif len(self._data) >= MAX_SYSEX:
                    self.rejected["oversize"] += 1
                    self._in_sysex = False
                    self._data = bytearray()
                else:
                    self._data.append(byte)
                continue
            if byte & 0x80:
                if self._cmd is not None:
                    self.rejected["interrupted"] += 1
                    self._cmd = None
                self._start(byte, out)
                continue
            if self._cmd is None:
                self.rejected["stray"] += 1
                continue
            self._data.append(byte)
            if len(self._data) == self._need:
                out.append(self._build(self._cmd, bytes(self._data)))
                self._cmd = None
                self._data = bytearray()
        return out

    def _start(self, byte: int, out: list[Message]) -> None:
        if byte == START_SYSEX:
            self._in_sysex = True
            self._data = bytearray()
            return
        need = self._data_len(byte)
        if need is None:
            self.rejected["unknown_command"] += 1
            return
        if need == 0:
            out.append(self._build(byte, b""))
            return
        self._cmd = byte
        self._need = need
        self._data = bytearray()

    def _build(self, cmd: int, data: bytes) -> Message:
        high, low = cmd & 0xF0, cmd & 0x0F
        if high == DIGITAL_MESSAGE:
            return DigitalPort(low, data[0] | data[1] << 7)
        if high == ANALOG_MESSAGE:
            return AnalogValue(low, data[0] | data[1] << 7)
        if high == REPORT_ANALOG:
            return ReportAnalog(low, bool(data[0]))
        if high == REPORT_DIGITAL:
            return ReportDigital(low, bool(data[0]))
        if cmd == REPORT_VERSION:
            return VersionReport(data[0], data[1]) if data else VersionQuery()
        if cmd == SET_PIN_MODE:
            return SetPinMode(data[0], data[1])
        if cmd == SET_DIGITAL_PIN_VALUE:
            return SetDigitalPinValue(data[0], data[1])
        return SystemReset()
