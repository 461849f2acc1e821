"""CRC-16/CCITT-FALSE for robot frames.

Hand-written (a table of 256 entries) rather than pulling `crcmod`, which has been unmaintained
since 2010: the polynomial and init value are part of our wire spec and a vendor must match them.
Check value: crc16_ccitt(b"123456789") == 0x29B1.
"""

from __future__ import annotations

_POLY = 0x1021
_INIT = 0xFFFF


def _make_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ _POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _make_table()


def crc16_ccitt(data: bytes, crc: int = _INIT) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc
