"""Consistent Overhead Byte Stuffing.

Hand-written rather than taken from the `cobs` package: it is twenty lines, it is part of the
protocol we specify (docs/protocol-serial-robot.md), and the simulator and a vendor port need to
read exactly this code.
"""

from __future__ import annotations

from drivers.errors import FrameError


def cobs_encode(data: bytes) -> bytes:
    """Encode `data` so that the result contains no zero byte (canonical form, no trailing 0x01)."""
    out = bytearray(b"\x00")  # placeholder for the first code byte
    code_index = 0
    code = 1
    last = len(data) - 1
    for i, byte in enumerate(data):
        if byte == 0:
            out[code_index] = code
            code_index = len(out)
            out.append(0)
            code = 1
            continue
        out.append(byte)
        code += 1
        if code == 0xFF and i != last:
            out[code_index] = code
            code_index = len(out)
            out.append(0)
            code = 1
    out[code_index] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS block (without its zero delimiter); raise FrameError('cobs') if malformed."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        end = i + code
        if code == 0 or end > n:
            raise FrameError("cobs", "bad code byte")
        chunk = data[i + 1 : end]
        if 0 in chunk:
            raise FrameError("cobs", "zero byte inside a block")
        out += chunk
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def cobs_max_encoded_len(n: int) -> int:
    """Worst-case encoded length of `n` bytes (one overhead byte per 254)."""
    return n + n // 254 + 1
