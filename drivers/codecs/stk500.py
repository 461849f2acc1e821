"""STK500 v1, the protocol of the Optiboot bootloader on Arduino-class boards (what avrdude -c arduino
speaks).

Every command ends with CRC_EOP (0x20); every answer is INSYNC (0x14), optional data, OK (0x10).
"""

from __future__ import annotations

from drivers.errors import FrameError

CRC_EOP = 0x20
INSYNC = 0x14
OK = 0x10
NOSYNC = 0x15
FAILED = 0x11

GET_SYNC = 0x30
GET_PARAMETER = 0x41
ENTER_PROGMODE = 0x50
LEAVE_PROGMODE = 0x51
LOAD_ADDRESS = 0x55
PROG_PAGE = 0x64
READ_PAGE = 0x74
READ_SIGN = 0x75

PARAM_SW_MAJOR = 0x82
PARAM_SW_MINOR = 0x83
MEM_FLASH = ord("F")
# ATmega328P (Uno, Nano): 128-byte pages, 32 KiB flash of which Optiboot keeps the top 512 bytes.
ATMEGA328P_SIGNATURE = bytes([0x1E, 0x95, 0x0F])
PAGE_SIZE = 128
APP_FLASH_SIZE = 32 * 1024 - 512


def command(cmd: int, args: bytes = b"") -> bytes:
    return bytes([cmd]) + args + bytes([CRC_EOP])


def get_sync() -> bytes:
    return command(GET_SYNC)


def read_signature() -> bytes:
    return command(READ_SIGN)


def load_address(byte_address: int) -> bytes:
    word = byte_address // 2  # flash is addressed in 16-bit words
    return command(LOAD_ADDRESS, word.to_bytes(2, "little"))


def prog_page(data: bytes) -> bytes:
    if not 0 < len(data) <= 256:
        raise FrameError("length", "page must be 1..256 bytes")
    return command(PROG_PAGE, len(data).to_bytes(2, "big") + bytes([MEM_FLASH]) + data)


def read_page(length: int) -> bytes:
    return command(READ_PAGE, length.to_bytes(2, "big") + bytes([MEM_FLASH]))


def answer_length(cmd: int, args: bytes = b"") -> int:
    """Bytes the bootloader answers with, INSYNC and OK included."""
    if cmd == READ_SIGN:
        return 5
    if cmd == GET_PARAMETER:
        return 3
    if cmd == READ_PAGE:
        return 2 + int.from_bytes(args[:2], "big")
    return 2


def parse_answer(raw: bytes) -> bytes:
    """Check INSYNC ... OK framing and return the data in between."""
    if len(raw) < 2 or raw[0] != INSYNC:
        raise FrameError("stk500_sync", f"answer starts with {raw[:1].hex() or 'nothing'}")
    if raw[-1] != OK:
        raise FrameError("stk500_failed", f"answer ends with {raw[-1:].hex()}")
    return raw[1:-1]
