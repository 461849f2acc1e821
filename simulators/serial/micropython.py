"""A simulated MicroPython board speaking the real raw REPL and raw-paste protocols."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum

from drivers.codecs import repl
from drivers.links import Link
from drivers.types import Family
from simulators.serial.base import SimDevice, UsbIdentity
from simulators.serial.minipython import BoardState, MiniPython

# Silicon Labs CP2102 as on most ESP32 dev boards.
ESP32_VID, ESP32_PID = 0x10C4, 0xEA60
# MicroPython's default raw-paste window is half its 256-byte stdin buffer.
PASTE_WINDOW = 128
# Bytes of code the board accepts in one submission (its heap would run out first on a real one).
MAX_CODE = 64 * 1024
# MicroPython's readline keeps one line in a fixed buffer; longer input is dropped, not buffered.
MAX_LINE = 1024


class Mode(Enum):
    FRIENDLY = "friendly"
    RAW = "raw"
    PASTE = "paste"


@dataclass
class MicroPythonSim(SimDevice):
    unique_id: bytes
    usb_serial: str | None = None
    raw_paste: bool = True
    sysname: str = "esp32"
    release: str = "1.23.0"
    files: dict[str, bytes] = field(default_factory=dict)
    family = Family.MICROPYTHON

    def __post_init__(self) -> None:
        self.board = BoardState(self.unique_id, sysname=self.sysname, release=self.release, files=self.files)
        self.interp = MiniPython(self.board, on_reset=self._hard_reset)
        self.usb = UsbIdentity(
            ESP32_VID,
            ESP32_PID,
            self.usb_serial or self.unique_id.hex().upper(),
            "Silicon Labs",
            "CP2102 USB to UART Bridge Controller",
        )
        self.mode = Mode.FRIENDLY
        self.soft_resets = 0
        self.hard_resets = 0
        self.executed: list[str] = []
        self._pending_reset = False
        # Lines of a compound statement typed at the friendly REPL, waiting for the blank line that ends it.
        self._pending_lines: list[str] = []

    def _hard_reset(self) -> None:
        self._pending_reset = True

    async def serve(self, link: Link) -> None:
        # Plugging in powers the board up: it boots to the friendly REPL with a fresh interpreter,
        # while its filesystem (and any half-written file) survives.
        self.mode = Mode.FRIENDLY
        self.interp.reset()
        line = bytearray()
        ctrl_e = b""
        paste_count = 0
        out = _Out(link)
        while True:
            data = await link.read()
            for byte in data:
                c = bytes([byte])
                if ctrl_e:
                    ctrl_e += c
                    if len(ctrl_e) < 3:
                        continue
                    if ctrl_e == repl.RAW_PASTE_REQUEST and self.raw_paste:
                        out.add(b"R\x01" + PASTE_WINDOW.to_bytes(2, "little") + b"\x01")
                        self.mode, line, paste_count = Mode.PASTE, bytearray(), 0
                    else:
                        out.add(b"R\x00")
                    ctrl_e = b""
                    continue
                if self.mode is Mode.FRIENDLY:
                    if c == repl.CTRL_A:
                        self.mode, line = Mode.RAW, bytearray()
                        out.add(repl.RAW_BANNER + b">")
                    elif c == repl.CTRL_C:
                        line = bytearray()
                        self._pending_lines = []
                        out.add(b"\r\n>>> ")
                    elif c == repl.CTRL_D and not line and not self._pending_lines:
                        self._soft_reset(out, raw=False)
                    else:
                        line = self._friendly_byte(byte, line, out)
                    continue
                if self.mode is Mode.PASTE:
                    if c == repl.CTRL_C:
                        # As MicroPython's stdin reader: Ctrl-C ends the paste with KeyboardInterrupt.
                        out.add(b"\x04\x04Traceback (most recent call last):\r\nKeyboardInterrupt: \r\n\x04>")
                        self.mode, line = Mode.RAW, bytearray()
                        continue
                    if c == repl.CTRL_D:
                        out.add(b"\x04")
                        self._run(bytes(line), out)
                        self.mode, line = Mode.RAW, bytearray()
                        continue
                    line += c
                    paste_count += 1
                    if paste_count % PASTE_WINDOW == 0:
                        out.add(b"\x01")  # consumed a window: the host may send another
                    if len(line) > MAX_CODE:
                        out.add(b"\x04")  # abrupt end, as a board out of memory does
                        self.mode, line = Mode.RAW, bytearray()
                        out.add(b"\x04MemoryError: code too long\r\n\x04>")
                    continue
                # raw mode
                if c == repl.CTRL_D:
                    if not line:
                        self._soft_reset(out, raw=True)
                        continue
                    out.add(b"OK")
                    self._run(bytes(line), out)
                    line = bytearray()
                elif c == repl.CTRL_E and not line:
                    ctrl_e = c
                elif c == repl.CTRL_B:
                    self.mode, line = Mode.FRIENDLY, bytearray()
                    out.add(b"\r\nMicroPython v" + self.release.encode() + b"; LabFleet sim\r\n>>> ")
                elif c == repl.CTRL_C:
                    line = bytearray()
                elif c == repl.CTRL_A:
                    line = bytearray()
                    out.add(repl.RAW_BANNER + b">")
                elif len(line) < MAX_CODE:
                    line += c
            await out.flush()
            if self._pending_reset:
                self._pending_reset = False
                self.hard_resets += 1
                self.interp.reset()
                self.mode = Mode.FRIENDLY
                await asyncio.sleep(0)
                await link.write(
                    b"ets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET)\r\n"
                    b"MicroPython v" + self.release.encode() + b"\r\n>>> "
                )

    def _friendly_byte(self, byte: int, line: bytearray, out: _Out) -> bytearray:
        """The friendly REPL a person types at: echo, backspace, Enter runs the line and prints its value."""
        if byte in (0x08, 0x7F):  # backspace: a terminal sends either
            if line:
                out.add(b"\x08 \x08")
                return line[:-1]
            return line
        if byte == 0x0A:
            return line  # a terminal sends CR for Enter; a CRLF's LF is not a second Enter
        if byte != 0x0D:
            if byte >= 0x20 and len(line) < MAX_LINE:
                out.add(bytes([byte]))
                return line + bytes([byte])
            return line
        out.add(b"\r\n")
        text = line.decode(errors="replace")
        if self._pending_lines or text.rstrip().endswith(":"):
            # A compound statement: collect lines until an empty one behind the "... " prompt, indenting the
            # next line as MicroPython's REPL does (4 more after a ':', else the same as this line).
            if text.strip():
                self._pending_lines.append(text)
                indent = len(text) - len(text.lstrip(" ")) + (4 if text.rstrip().endswith(":") else 0)
                out.add(b"... " + b" " * indent)
                return bytearray(b" " * indent)
            text, self._pending_lines = "\n".join(self._pending_lines), []
        if text.strip():
            self.executed.append(text)
            stdout, stderr = self.interp.run(text, echo=True)
            out.add(stdout.encode() + stderr.encode())
        out.add(b">>> ")
        return bytearray()

    def _soft_reset(self, out: _Out, *, raw: bool) -> None:
        self.soft_resets += 1
        self.interp.reset()
        if raw:
            out.add(b"OK\r\n")
        out.add(b"MPY: soft reboot\r\n")
        if raw:
            out.add(repl.RAW_BANNER + b">")
        else:
            out.add(b"MicroPython v" + self.release.encode() + b"\r\n>>> ")

    def _run(self, code: bytes, out: _Out) -> None:
        try:
            text = code.decode()
        except UnicodeDecodeError:
            out.add(b"\x04SyntaxError: invalid UTF-8\r\n\x04>")
            return
        self.executed.append(text)
        stdout, stderr = self.interp.run(text)
        out.add(stdout.encode() + b"\x04" + stderr.encode() + b"\x04>")


class _Out:
    """Collects what the board prints while it handles one read, then writes it in one go."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._buf = bytearray()

    def add(self, data: bytes) -> None:
        self._buf += data

    async def flush(self) -> None:
        if self._buf:
            data, self._buf = bytes(self._buf), bytearray()
            await self._link.write(data)
