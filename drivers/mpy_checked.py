"""MicroPython boards, layer 2: checked execution over the raw REPL (docs/protocol-serial-kits.md, "Noise").

The raw REPL carries no checksum: a flipped byte in a script is executed as written. So nothing the
driver wants done is sent as plain code. It is sent as G(nonce, crc32, code_b64, data_b64): G decodes
both, runs the code only if the CRC-32 of code+data matches, and prints its result as
`LF<repr((nonce, status, R))|crc32>` so a damaged reply is recognised too. Every line of every
submission is either inert (assignments) or checked, so a submission cut short by a noise-made
Ctrl-C/Ctrl-D, or typed into the friendly REPL after a noise-made Ctrl-B, runs nothing unchecked.
G has four parameters and every library function another arity, so a damaged name calling one of
them directly fails with TypeError. G is installed by a bootstrap whose exec is keyed by its own CRC.

The code that runs on the board (G, the upload buffer Q, the device operations) is the helper file
`drivers/onboard/mpy_helper.py`, sent as `drivers.mpy_helper_code` squeezes it.
"""

from __future__ import annotations

import base64
import logging
import re
import zlib
from typing import Any

from drivers.codecs.repl import parse_literal
from drivers.errors import DeviceError, DeviceTimeout, FrameError, ProtocolError
from drivers.mpy_helper_code import helper_parts
from drivers.mpy_repl import ACK_TIMEOUT, ENTER_TIMEOUT, EXEC_TIMEOUT, REBOOT_TIMEOUT, RawRepl
from drivers.session import StreamSession

log = logging.getLogger(__name__)

# Largest piece of a file (or of helper code) sent in one checked submission: mpremote's fs chunk,
# small enough for a board's 256-byte stdin buffer (base64 makes it ~340 bytes, paced below).
WRITE_CHUNK = 256
# On a noisy line each failed submission halves the piece and each good one grows it by this much:
# at a 1% byte error rate a 256-byte piece almost never arrives intact, a 32-byte one about half the time.
MIN_CHUNK = 16
CHUNK_STEP = 32
# Consecutive failed submissions of one step before giving up: at a 1% byte error rate a small
# submission gets through at least one time in ten, so 200 failures in a row mean a broken board.
MAX_FAILURES = 200
# Pings that must all fail before G counts as gone: an empty call gets through a 1%-noise line
# about half the time, so four misses in a row happen once in ~16 and cost only a reinstall.
PINGS = 4

_PARTS = helper_parts()
# G, the checked exec; installed in checked pieces by a bootstrap (_install_stub).
STUB = _PARTS["stub"]
# Q appends the data operand to the RAM buffer U only at the offset the host names (idempotent), so
# helper code too long for one noisy submission is sent in checked pieces and exec'd once complete.
QDEF = _PARTS["q"]
# The device operations, installed once per interpreter (again after a reboot). Each write is
# idempotent: A appends only at the offset the host names, V and K act only if their file exists.
LIB = _PARTS["lib"]
# The stub goes over in pieces this big: with the piece's own check a submission is ~120 bytes, which
# gets through a 1%-noise line about a third of the time (the whole stub at once: one time in a hundred).
STUB_PIECE = 40
REPLY = re.compile(rb"LF<([^\r\n]*)\|(\d{1,10})>")
# What the journal records for code exec'd with whatever data happens to be in D (stub, library).
ANY_DATA = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _reply_for(out: bytes, nonce: int) -> tuple[Any, Any] | None:
    """(status, R) from G's checked reply line for `nonce`, or None if no intact one is there."""
    for m in REPLY.finditer(out):
        text, crc = m.group(1), int(m.group(2))
        if zlib.crc32(text) != crc:
            continue
        try:
            n, status, value = parse_literal(text)
        except (FrameError, ValueError, TypeError):
            continue
        if n == nonce:
            return status, value
    return None


class CheckedRepl(RawRepl):
    """The raw REPL with the checked helper: `call` runs code on the board once, intact, or not at all."""

    def __init__(
        self,
        session: StreamSession,
        *,
        ack_timeout: float = ACK_TIMEOUT,
        enter_timeout: float = ENTER_TIMEOUT,
        reboot_timeout: float = REBOOT_TIMEOUT,
        journal: list[tuple[bytes, bytes | None]] | None = None,
    ) -> None:
        super().__init__(
            session, ack_timeout=ack_timeout, enter_timeout=enter_timeout, reboot_timeout=reboot_timeout
        )
        # Every (code, data) handed to the checked helper, for tests to compare with what ran.
        self.journal = journal
        self._stub_ok = False
        self._q_ok = False
        self._lib_ok = False
        self._suspect = 0  # failures since the helper was last seen alive
        self._nonce = 0
        self.chunk = WRITE_CHUNK
        self.failures = 0  # failed submissions (noise), for diagnostics
        self.resyncs = 0

    async def enter_raw_repl(self, *, soft_reset: bool = False) -> None:
        await super().enter_raw_repl(soft_reset=soft_reset)
        if soft_reset:
            self._stub_ok = self._q_ok = self._lib_ok = False  # the reset took the helper with it

    async def _attempt(
        self, code: bytes, data: bytes, *, timeout: float = EXEC_TIMEOUT, journal_data: bytes | None = b""
    ) -> tuple[bool, Any]:
        """One submission through G: (True, R) when the board ran `code` and its reply arrived intact,
        (False, None) when the line damaged either. Raises DeviceError when the code itself failed."""
        if self.journal is not None:
            self.journal.append((code, data if journal_data is not None else ANY_DATA))
        self._nonce += 1
        nonce = self._nonce
        line = f"G({nonce},{zlib.crc32(code + data)},'{_b64(code)}','{_b64(data)}')\n".encode()
        async with self.session.lock:
            try:
                raw = await self._submit(line, timeout)
            except (DeviceTimeout, ProtocolError) as err:
                self.session._raise_if_closed()
                log.debug("%s: submission lost (%s)", self.session.name, err)
                raw = b""
            reply = _reply_for(raw, nonce)
            if reply is None:
                self.failures += 1
                self._suspect += 3 if b"NameError" in raw else 1
                if not raw.endswith(b"\x04>"):  # the board may be anywhere (paste, friendly REPL)
                    self.resyncs += 1
                    await self._resync(self.ack_timeout * 2)
                return False, None
        status, value = reply
        if status is None:  # G saw a CRC mismatch: the submission was damaged and nothing ran
            self.failures += 1
            return False, None
        self._suspect = 0
        if status == 0:
            return True, value
        if isinstance(status, str) and status.startswith("NameError"):
            self._q_ok = self._lib_ok = False  # the helpers are gone (a reboot the host did not ask for)
            self.failures += 1
            return False, None
        raise DeviceError(f"board raised {status}")

    async def _ensure_helper(self, *, lib: bool) -> None:
        if self._suspect >= 3:
            self._stub_ok = await self._ping()
            self._suspect = 0
        if not self._stub_ok:
            await self._install_stub()
        if not self._q_ok:
            for _ in range(MAX_FAILURES):
                ok, _ = await self._attempt(QDEF, b"")
                if ok:
                    self._q_ok = True
                    break
                if self._suspect >= 3 and not await self._ping():
                    await self._install_stub()
            else:
                raise DeviceTimeout(f"{self.session.name}: no intact answer while installing Q")
        if lib and not self._lib_ok:
            await self._exec_long(LIB)
            self._lib_ok = True

    async def _ping(self) -> bool:
        """Is G there? An empty checked call; a few tries, as a noisy line loses some."""
        for _ in range(PINGS):
            ok, _ = await self._attempt(b"", b"", timeout=self.ack_timeout * 2)
            if ok:
                return True
        self._lib_ok = False
        return False

    async def _install_stub(self) -> None:
        """Install G in checked pieces: each is kept only if its CRC matches, and the assembled stub is
        exec'd only if the CRC of the whole matches, so a damaged piece is resent, never run."""
        pieces = [STUB[i : i + STUB_PIECE] for i in range(0, len(STUB), STUB_PIECE)]
        stored: set[int] = set()
        misses = 0
        assemble = (
            "p="
            + "+".join(f"T{i}" for i in range(len(pieces)))
            + f"\nexec({{{zlib.crc32(STUB)}:p}}.get(B.crc32(p),b''))\n"
        ).encode()
        for _ in range(MAX_FAILURES):
            for i, piece in enumerate(pieces):
                if i in stored:
                    continue
                # The slot comes from the checked bytes (index first), so a damaged name cannot put
                # a good piece in the wrong place.
                checked = bytes([i]) + piece
                code = (
                    f"import binascii as B\nq=B.a2b_base64('{_b64(checked)}')\nif B.crc32(q)=="
                    f"{zlib.crc32(checked)}:globals()['T%d'%q[0]]=q[1:];print('LF+%d.'%q[0])\n"
                ).encode()
                raw = await self._unchecked(code)
                if f"LF+{i}.".encode() in raw:
                    stored.add(i)
            if len(stored) < len(pieces):
                continue
            if self.journal is not None:
                self.journal.append((STUB, ANY_DATA))
            await self._unchecked(assemble)
            if await self._ping():
                self._stub_ok = True
                self._q_ok = self._lib_ok = False
                self._suspect = 0
                return
            misses += 1
            if misses >= 3:
                stored.clear()  # a reset may have taken the pieces with it: send them all again
                misses = 0
        raise DeviceError(
            f"{self.session.name}: the checked-exec helper does not install "
            "(the board needs exec, binascii.a2b_base64 and binascii.crc32)"
        )

    async def _unchecked(self, code: bytes) -> bytes:
        """Submit inert or self-checking code whose answer only steers retries; b'' if it got lost."""
        async with self.session.lock:
            try:
                raw = await self._submit(code, self.ack_timeout * 4)
            except (DeviceTimeout, ProtocolError):
                self.session._raise_if_closed()
                self.failures += 1
                await self._resync(self.ack_timeout * 2)
                return b""
            if not raw.endswith(b"\x04>"):
                await self._resync(self.ack_timeout * 2)
        return raw

    async def call(
        self, code: str, data: bytes = b"", *, timeout: float = EXEC_TIMEOUT, lib: bool = True
    ) -> Any:
        """Run `code` through the checked helper until it ran once intact; return the value it left in R.

        The code must be idempotent: a run whose reply was lost is run again.
        """
        raw = code.encode()
        for _ in range(MAX_FAILURES):
            await self._ensure_helper(lib=lib)
            ok, value = await self._attempt(raw, data, timeout=timeout)
            if ok:
                return value
        raise DeviceTimeout(f"{self.session.name}: no intact answer after {MAX_FAILURES} submissions")

    async def _exec_long(self, code: bytes) -> Any:
        """Send helper code too long for one submission in checked pieces (Q), then exec it once whole."""
        for _ in range(4):
            offset = 0
            failures = 0
            while offset < len(code):
                piece = code[offset : offset + self.chunk]
                ok, got = await self._attempt(f"R=Q({offset})".encode(), piece)
                if not ok:
                    failures += 1
                    if failures > MAX_FAILURES:
                        raise DeviceTimeout(f"{self.session.name}: helper upload keeps failing")
                    self.chunk = max(MIN_CHUNK, self.chunk // 2)
                    if self._suspect >= 3:
                        await self._ensure_helper(lib=False)
                    continue
                failures = 0
                self.chunk = min(WRITE_CHUNK, self.chunk + CHUNK_STEP)
                offset = got if isinstance(got, int) and 0 <= got <= len(code) else 0
            # U is gone if the board reset since the upload: that reads as a damaged buffer (send again).
            check = (
                f"u=globals().get('U',b'')\nif len(u)=={len(code)} and B.crc32(u)=={zlib.crc32(code)}:\n"
                " exec(u,globals())\nelse:\n R='LFBAD'\n"
            ).encode()
            if self.journal is not None:
                self.journal.append((code, ANY_DATA))
            for _ in range(MAX_FAILURES):
                ok, value = await self._attempt(check, b"")
                if ok:
                    break
                await self._ensure_helper(lib=False)
            else:
                raise DeviceTimeout(f"{self.session.name}: helper code does not run")
            if value != "LFBAD":
                return value
        raise DeviceError(f"{self.session.name}: helper code arrives damaged on every try")
