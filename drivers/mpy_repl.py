"""MicroPython boards, layer 1: the raw REPL as mpremote drives it (enter, submit code, raw paste, read the
answer). Layer 2 (`drivers.mpy_checked`) makes execution safe on a noisy line; layer 3
(`drivers.micropython`) is the board's operations.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Self

from drivers.codecs import repl
from drivers.codecs.repl import ExecResult
from drivers.errors import DeviceError, DeviceTimeout, DriverError, ProtocolError
from drivers.links import Link, MemoryHub, open_link
from drivers.session import StreamSession

log = logging.getLogger(__name__)

# Entering the raw REPL interrupts whatever runs; a board busy in a C call can take a second.
ENTER_TIMEOUT = 5.0
# One short script (identify, write one chunk) on an ESP32 at 115200 baud takes well under a second;
# hashing a 64 KiB file takes ~2 s on a micro:bit-class chip.
EXEC_TIMEOUT = 10.0
# A board answers Ctrl-D ("OK", or the raw-paste end ack) and the raw-paste request within
# microseconds; 1 s covers a busy USB hub. Past it, the control byte was lost on the line.
ACK_TIMEOUT = 1.0
# Without raw paste there is no flow control: mpremote paces 256-byte writes 10 ms apart so the
# board's UART buffer does not overflow. We do the same.
FALLBACK_CHUNK = 256
FALLBACK_PACE = 0.01
# Soft reboot runs boot.py; a board with a slow boot.py (Wi-Fi connect) needs a while.
REBOOT_TIMEOUT = 15.0
# Consecutive raw-REPL resyncs without a prompt before the board counts as gone.
RESYNC_ATTEMPTS = 8


class RawRepl:
    """One connection to one MicroPython board, held in the raw REPL."""

    def __init__(
        self,
        session: StreamSession,
        *,
        ack_timeout: float = ACK_TIMEOUT,
        enter_timeout: float = ENTER_TIMEOUT,
        reboot_timeout: float = REBOOT_TIMEOUT,
    ) -> None:
        self.session = session
        self.ack_timeout = ack_timeout
        self.enter_timeout = enter_timeout
        self.reboot_timeout = reboot_timeout
        self.in_raw = False
        self.use_raw_paste: bool | None = None  # None: not probed yet

    @classmethod
    async def open(cls, url: str, *, memory_hub: MemoryHub | None = None, **kwargs: Any) -> Self:
        return await cls.over(await open_link(url, memory_hub=memory_hub), **kwargs)

    @classmethod
    async def over(cls, link: Link, **kwargs: Any) -> Self:
        session = StreamSession(link, name=f"mpy:{link.url}")
        await session.start()
        board = cls(session, **kwargs)
        try:
            await board.enter_raw_repl()
        except BaseException:
            await session.aclose()
            raise
        return board

    async def aclose(self) -> None:
        if self.in_raw and self.session.is_open:
            try:
                await self.session.write(b"\r" + repl.CTRL_B)  # leave the board in the friendly REPL
            except DriverError as err:
                log.debug("%s: could not leave raw REPL on close: %s", self.session.name, err)
        await self.session.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def enter_raw_repl(self, *, soft_reset: bool = False) -> None:
        s = self.session
        async with s.lock:
            await self._resync(self.enter_timeout)
            if soft_reset:
                await s.write(repl.CTRL_D)
                await s.read_until(repl.SOFT_REBOOT, self.reboot_timeout)
                await s.read_until(repl.RAW_BANNER + b">", self.reboot_timeout)
                s.discard()

    async def _resync(self, timeout: float) -> None:
        """Interrupt whatever runs and (re)enter the raw REPL, retrying while the line mangles the banner."""
        s = self.session
        for _ in range(RESYNC_ATTEMPTS):
            s.discard()
            await s.write(b"\r" + repl.CTRL_C + repl.CTRL_C)  # interrupt a running program or a paste
            await s.write(b"\r" + repl.CTRL_A)
            try:
                # The banner's tail: on a noisy line the whole 27 bytes arrive intact only ~75% of the time.
                await s.read_until(b"exit\r\n>", timeout)
            except DeviceTimeout:
                continue
            s.discard()
            self.in_raw = True
            return
        raise DeviceTimeout(f"{s.name}: board does not enter the raw REPL")

    async def exec(self, code: str, *, timeout: float = EXEC_TIMEOUT) -> ExecResult:
        """Run `code` on the board as it is (unchecked); return its stdout and stderr."""
        async with self.session.lock:
            if not self.in_raw:
                raise ProtocolError("board is not in the raw REPL")
            raw = await self._submit(code.encode(), timeout)
        if raw.startswith(b"OK"):
            raw = raw[2:]
        elif raw.startswith(repl.CTRL_D):
            raw = raw[1:]  # raw paste: the board's end-of-data acknowledgement
        out, _, rest = raw.partition(repl.CTRL_D)
        err, _, _ = rest.partition(repl.CTRL_D)
        return ExecResult(out, err)

    async def _submit(self, data: bytes, timeout: float) -> bytes:
        """One raw-REPL submission: everything the board sent after taking the code, up to its
        `\\x04>` prompt, or up to a silence once it started answering (the prompt may be mangled on a
        noisy line)."""
        s = self.session
        s.discard()
        await s.write(repl.CTRL_C)  # raw REPL: clears whatever noise left in the board's line buffer
        if self.use_raw_paste is not False:
            await s.write(repl.RAW_PASTE_REQUEST)
            answer = await s.read_exact(2, self.ack_timeout)
            if answer == repl.RAW_PASTE_SUPPORTED:
                self.use_raw_paste = True
                await self._raw_paste_write(data)
            elif answer == repl.RAW_PASTE_REFUSED:
                self.use_raw_paste = False
                await self._raw_write(data)
            elif self.use_raw_paste is None and answer == repl.RAW_BANNER[:2]:
                # An old firmware took the request as code and restarted the raw REPL; fall back.
                await s.read_until(b"exit\r\n>", self.ack_timeout)
                self.use_raw_paste = False
                await self._raw_write(data)
            else:
                raise ProtocolError(f"garbled raw-paste answer {answer!r}")
        else:
            await self._raw_write(data)
        # The board took the code when it answers at all ("OK", or the paste's end ack); no answer
        # means the Ctrl-D was lost on the line and the code sits unexecuted in its line buffer.
        await s.wait_data(self.ack_timeout, "the board to take the code")

        def finished(buf: bytearray) -> int:
            end = buf.find(b"\x04>")
            return end + 2 if end >= 0 else 0

        return await s.wait_for(finished, timeout, "end of execution", idle=self.ack_timeout)

    async def _raw_write(self, data: bytes) -> None:
        s = self.session
        for i in range(0, len(data), FALLBACK_CHUNK):
            await s.write(data[i : i + FALLBACK_CHUNK])
            if i + FALLBACK_CHUNK < len(data):
                await asyncio.sleep(FALLBACK_PACE)
        await s.write(repl.CTRL_D)

    async def _raw_paste_write(self, data: bytes) -> None:
        s = self.session
        window = int.from_bytes(await s.read_exact(2, self.ack_timeout), "little")
        # Boards offer half their stdin buffer (128 on most ports); anything else is a mangled answer.
        if not 0 < window <= 8192:
            raise ProtocolError(f"board offered a raw-paste window of {window}")
        remain = window
        i = 0
        while i < len(data):
            while remain == 0 or s.pending():
                flow = await s.read_exact(1, self.ack_timeout)
                if flow == b"\x01":
                    remain += window
                elif flow == repl.CTRL_D:
                    await s.write(repl.CTRL_D)  # the board ended the paste early (out of memory)
                    return
                else:
                    raise ProtocolError(f"unexpected byte {flow!r} during raw paste")
            piece = data[i : i + remain]
            await s.write(piece)
            remain -= len(piece)
            i += len(piece)
        await s.write(repl.CTRL_D)

    async def run(self, code: str, *, timeout: float = EXEC_TIMEOUT) -> bytes:
        """exec() that raises DeviceError with the board's exception line when the code fails."""
        result = await self.exec(code, timeout=timeout)
        if result.failed:
            raise DeviceError(f"board raised {result.error_line()}")
        return result.out
