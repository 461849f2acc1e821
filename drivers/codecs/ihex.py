"""Intel HEX (the format Arduino toolchains emit for sketches) to a flat binary image; pure, no I/O."""

from __future__ import annotations

from drivers.errors import FrameError

# An ATmega328P has 32 KiB of flash; 1 MiB leaves room for larger AVR boards and refuses a hostile file
# that places one byte at a huge address to make us allocate gigabytes.
MAX_IMAGE_BYTES = 1 << 20
# Record types: data, end of file, extended segment address, start segment address, extended linear
# address, start linear address (the start records carry an entry point a bootloader ignores).
DATA, EOF, EXT_SEGMENT, START_SEGMENT, EXT_LINEAR, START_LINEAR = range(6)


def looks_like_ihex(data: bytes) -> bool:
    """True when `data` starts like an Intel HEX file (a ':' record, maybe after whitespace)."""
    return data.lstrip()[:1] == b":"


def parse_ihex(text: bytes, *, fill: int = 0xFF) -> bytes:
    """The bytes the records describe, from address 0, gaps filled with `fill` (erased flash).

    Raises FrameError naming the line for a bad checksum, a bad record or a missing end-of-file record.
    """
    memory: dict[int, bytes] = {}
    base = 0
    top = 0
    ended = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if ended:
            raise FrameError("ihex_after_eof", f"line {number}: data after the end-of-file record")
        if line[:1] != b":":
            raise FrameError("ihex_syntax", f"line {number}: a record starts with ':'")
        try:
            record = bytes.fromhex(line[1:].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise FrameError("ihex_syntax", f"line {number}: not hex digits") from None
        if len(record) < 5 or len(record) != 5 + record[0]:
            raise FrameError("ihex_length", f"line {number}: length byte does not match the record")
        if sum(record) & 0xFF:
            raise FrameError("ihex_checksum", f"line {number}: bad checksum")
        count, address, kind, payload = record[0], int.from_bytes(record[1:3], "big"), record[3], record[4:-1]
        if kind == DATA:
            start = base + address
            if start + count > MAX_IMAGE_BYTES:
                raise FrameError(
                    "ihex_too_large", f"line {number}: address {start:#x} beyond {MAX_IMAGE_BYTES}"
                )
            memory[start] = payload
            top = max(top, start + count)
        elif kind == EOF:
            ended = True
        elif kind == EXT_SEGMENT and count == 2:
            base = int.from_bytes(payload, "big") << 4
        elif kind == EXT_LINEAR and count == 2:
            base = int.from_bytes(payload, "big") << 16
        elif kind in (START_SEGMENT, START_LINEAR):
            continue
        else:
            raise FrameError("ihex_record", f"line {number}: unsupported record type {kind}")
    if not ended:
        raise FrameError("ihex_truncated", "no end-of-file record: the file is cut short")
    image = bytearray([fill]) * top
    for start, payload in memory.items():
        image[start : start + len(payload)] = payload
    return bytes(image)


def encode_ihex(data: bytes, *, width: int = 16) -> bytes:
    """`data` from address 0 as Intel HEX records, as avr-objcopy writes them (extended linear address
    records past 64 KiB)."""
    lines = []
    for offset in range(0, len(data), width):
        if offset and offset % 0x10000 == 0:
            lines.append(_record(bytes([2, 0, 0, EXT_LINEAR]) + (offset >> 16).to_bytes(2, "big")))
        chunk = data[offset : offset + width]
        lines.append(
            _record(bytes([len(chunk)]) + (offset & 0xFFFF).to_bytes(2, "big") + bytes([DATA]) + chunk)
        )
    lines.append(":00000001FF")
    return ("\n".join(lines) + "\n").encode()


def _record(body: bytes) -> str:
    return ":" + (body + bytes([-sum(body) & 0xFF])).hex().upper()
