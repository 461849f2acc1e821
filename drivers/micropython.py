"""MicroPython boards (ESP32-, Pico-, micro:bit-class kits) over the raw REPL, as mpremote drives it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import zlib
from collections.abc import Mapping
from typing import Any, Self

from drivers.codecs import repl
from drivers.codecs.repl import ExecResult, parse_literal, py_str
from drivers.errors import DeviceError, DeviceTimeout, DriverError, FrameError, ProtocolError
from drivers.links import Link, MemoryHub, open_link
from drivers.session import StreamSession
from drivers.types import (
    NO_PROGRESS,
    ConfigResult,
    DeviceIdentity,
    Family,
    FirmwareImage,
    FlashResult,
    Health,
    HealthStatus,
    Progress,
    ProgressCallback,
)

log = logging.getLogger(__name__)

# Entering the raw REPL interrupts whatever runs; a board busy in a C call can take a second.
ENTER_TIMEOUT = 5.0
# One short script (identify, write one chunk) on an ESP32 at 115200 baud takes well under a second;
# hashing a 64 KiB file takes ~2 s on a micro:bit-class chip.
EXEC_TIMEOUT = 10.0
# A board answers Ctrl-D ("OK", or the raw-paste end ack) and the raw-paste request within
# microseconds; 1 s covers a busy USB hub. Past it, the control byte was lost on the line.
ACK_TIMEOUT = 1.0
# Largest piece of a file (or of helper code) sent in one checked submission: mpremote's fs chunk,
# small enough for a board's 256-byte stdin buffer (base64 makes it ~340 bytes, paced below).
WRITE_CHUNK = 256
# On a noisy line each failed submission halves the piece and each good one grows it by this much:
# at a 1% byte error rate a 256-byte piece almost never arrives intact, a 32-byte one about half the time.
MIN_CHUNK = 16
CHUNK_STEP = 32
# Without raw paste there is no flow control: mpremote paces 256-byte writes 10 ms apart so the
# board's UART buffer does not overflow. We do the same.
FALLBACK_CHUNK = 256
FALLBACK_PACE = 0.01
# Soft reboot runs boot.py; a board with a slow boot.py (Wi-Fi connect) needs a while.
REBOOT_TIMEOUT = 15.0
# Consecutive failed submissions of one step before giving up: at a 1% byte error rate a small
# submission gets through at least one time in ten, so 200 failures in a row mean a broken board.
MAX_FAILURES = 200
# Consecutive raw-REPL resyncs without a prompt before the board counts as gone.
RESYNC_ATTEMPTS = 8
# Pings that must all fail before G counts as gone: an empty call gets through a 1%-noise line
# about half the time, so four misses in a row happen once in ~16 and cost only a reinstall.
PINGS = 4
# Pings that must all fail before a reboot is believed (the helper is gone after a soft reset).
REBOOT_PINGS = 6
# Health thresholds: a board below 8 KiB free heap fails allocations soon; under 5% free flash
# it cannot take the next app update.
HEAP_FAULT_BYTES = 8 * 1024
HEAP_LOW_FRACTION = 0.15
FS_LOW_FRACTION = 0.05

CONFIG_PATH = "/lf_config.json"
APP_MANIFEST = "/lf_app.json"

# ---- the checked-exec helper (docs/protocol-serial-kits.md, "Noise") ------------------------------
# The raw REPL carries no checksum: a flipped byte in a script is executed as written. So nothing the
# driver wants done is sent as plain code. It is sent as G(nonce, crc32, code_b64, data_b64): G decodes
# both, runs the code only if the CRC-32 of code+data matches, and prints its result as
# `LF<repr((nonce, status, R))|crc32>` so a damaged reply is recognised too. Every line of every
# submission is either inert (assignments) or checked, so a submission cut short by a noise-made
# Ctrl-C/Ctrl-D, or typed into the friendly REPL after a noise-made Ctrl-B, runs nothing unchecked.
# G has four parameters and every library function another arity, so a damaged name calling one of
# them directly fails with TypeError. G is installed by a bootstrap whose exec is keyed by its own CRC.
STUB = b"""import binascii as B
def G(n,k,c,d):
 global D,R
 D=B.a2b_base64(d);c=B.a2b_base64(c);R=x=None
 if B.crc32(c+D)==k:
  try:
   exec(c,globals());x=0
  except Exception as e:
   x=repr(e)
 s=repr((n,x,R))
 print('LF<%s|%d>'%(s,B.crc32(s.encode())))
"""
# Appends the data operand to the RAM buffer U only at the offset the host names (idempotent), so
# helper code too long for one noisy submission is sent in checked pieces and exec'd once complete.
QDEF = b"""def Q(o):
 global U
 if o==0:
  U=b''
 try:
  if len(U)==o:
   U+=D
  return len(U)
 except NameError:
  return 0
"""
# The device operations, installed once per interpreter (again after a reboot). Each write is
# idempotent: A appends only at the offset the host names, V and K act only if their file exists.
LIB = b"""import os,sys,gc,machine,hashlib
def I():
 u=os.uname()
 v=''
 if E('/','lf_app.json'):
  import json
  f=open('/lf_app.json')
  v=str(json.loads(f.read()).get('version',''))
  f.close()
 return (B.hexlify(machine.unique_id()).decode(),u.sysname,u.release,u.machine,sys.implementation.name,tuple(sys.implementation.version),v)
def H():
 import time
 gc.collect()
 s=os.statvfs('/')
 return (gc.mem_free(),gc.mem_alloc(),s[0]*s[3],s[0]*s[2],machine.freq(),time.ticks_ms())
def E(d,n):
 try:
  return n in os.listdir(d)
 except OSError:
  return False
def S(d,n,p):
 if not E(d,n):
  return (-1,'')
 h=hashlib.sha256()
 f=open(p,'rb')
 z=0
 while True:
  b=f.read(256)
  if not b:
   break
  z+=len(b)
  h.update(b)
 f.close()
 return (z,B.hexlify(h.digest()).decode())
def A(p,o):
 try:
  s=os.stat(p)[6]
 except OSError:
  s=-1
 if o==0 or s==o:
  f=open(p,'wb' if o==0 else 'ab')
  f.write(D)
  f.close()
  s=o+len(D)
 return s
def M(d,n,p):
 if not E(d,n):
  os.mkdir(p)
def V(d,t,u,n,p):
 if E(d,t):
  if E(d,n):
   os.remove(p)
  os.rename(u,p)
def K(d,n,p):
 if E(d,n):
  os.remove(p)
def F(p):
 f=open(p)
 t=f.read()
 f.close()
 return t
R=1
"""  # noqa: E501 - minified MicroPython, sent to the board as it is
# The stub goes over in pieces this big: with the piece's own check a submission is ~120 bytes, which
# gets through a 1%-noise line about a third of the time (the whole stub at once: one time in a hundred).
STUB_PIECE = 40
REPLY = re.compile(rb"LF<([^\r\n]*)\|(\d{1,10})>")
# What the journal records for code exec'd with whatever data happens to be in D (stub, library).
ANY_DATA = None


def _split(path: str) -> tuple[str, str]:
    folder, _, name = path.rpartition("/")
    return folder or "/", name


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


class MicroPythonBoard:
    """One connection to one MicroPython board, held in the raw REPL."""

    family = Family.MICROPYTHON

    def __init__(
        self,
        session: StreamSession,
        *,
        ack_timeout: float = ACK_TIMEOUT,
        enter_timeout: float = ENTER_TIMEOUT,
        reboot_timeout: float = REBOOT_TIMEOUT,
        journal: list[tuple[bytes, bytes | None]] | None = None,
    ) -> None:
        self.session = session
        self.ack_timeout = ack_timeout
        self.enter_timeout = enter_timeout
        self.reboot_timeout = reboot_timeout
        self.in_raw = False
        self.use_raw_paste: bool | None = None  # None: not probed yet
        self.identity: DeviceIdentity | None = None
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

    @classmethod
    async def open(cls, url: str, *, memory_hub: MemoryHub | None = None, **kwargs: Any) -> MicroPythonBoard:
        return await cls.over(await open_link(url, memory_hub=memory_hub), **kwargs)

    @classmethod
    async def over(cls, link: Link, **kwargs: Any) -> MicroPythonBoard:
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

    # ---- raw REPL protocol ----------------------------------------------------------------

    async def enter_raw_repl(self, *, soft_reset: bool = False) -> None:
        s = self.session
        async with s.lock:
            await self._resync(self.enter_timeout)
            if soft_reset:
                await s.write(repl.CTRL_D)
                await s.read_until(repl.SOFT_REBOOT, self.reboot_timeout)
                await s.read_until(repl.RAW_BANNER + b">", self.reboot_timeout)
                s.discard()
                self._stub_ok = self._q_ok = self._lib_ok = False

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

    # ---- checked execution ------------------------------------------------------------------

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

    # ---- device operations ----------------------------------------------------------------

    async def identify(self) -> DeviceIdentity:
        got = await self.call("R=I()")
        try:
            uid, sysname, release, machine, impl, impl_version, app_version = got
        except (ValueError, TypeError) as err:
            raise ProtocolError(f"identify returned something unexpected: {str(got)[:80]!r}") from err
        self.identity = DeviceIdentity(
            Family.MICROPYTHON,
            f"mpy-{uid}",  # no ':': the identity becomes an MQTT username (mosquitto's password file)
            str(machine),
            str(app_version) or "none",
            (
                ("sysname", str(sysname)),
                ("micropython", str(release)),
                ("implementation", str(impl)),
                ("implementation_version", ".".join(str(v) for v in impl_version)),
            ),
        )
        return self.identity

    async def read_health(self) -> Health:
        got = await self.call("R=H()")
        try:
            mem_free, mem_alloc, fs_free, fs_total, freq, ticks = got
        except (ValueError, TypeError) as err:
            raise ProtocolError(f"health returned something unexpected: {str(got)[:80]!r}") from err
        if isinstance(freq, tuple):  # some ports report (cpu, ahb, apb, ...)
            freq = freq[0]
        heap_total = mem_free + mem_alloc
        problems = []
        status = HealthStatus.OK
        if mem_free < HEAP_FAULT_BYTES:
            problems.append("heap nearly exhausted")
            status = HealthStatus.FAULT
        elif heap_total and mem_free / heap_total < HEAP_LOW_FRACTION:
            problems.append("heap low")
            status = HealthStatus.DEGRADED
        if fs_total and fs_free / fs_total < FS_LOW_FRACTION:
            problems.append("filesystem nearly full")
            if status is HealthStatus.OK:
                status = HealthStatus.DEGRADED
        readings = (
            ("heap_free_bytes", float(mem_free)),
            ("heap_total_bytes", float(heap_total)),
            ("fs_free_bytes", float(fs_free)),
            ("fs_total_bytes", float(fs_total)),
            ("cpu_hz", float(freq)),
            ("ticks_ms", float(ticks)),
        )
        return Health(status, readings, tuple(problems))

    async def apply_config(self, config: Mapping[str, str]) -> ConfigResult:
        blob = json.dumps({str(k): str(v) for k, v in config.items()}, sort_keys=True).encode()
        try:
            await self.write_file(CONFIG_PATH, blob)
        except DeviceError as err:
            return ConfigResult(False, (), str(err))
        return ConfigResult(True, tuple(sorted(str(k) for k in config)))

    async def read_config(self) -> dict[str, str]:
        """The settings file on the board ({} when it has none yet)."""
        if (await self.file_hash(CONFIG_PATH))[0] < 0:
            return {}
        text = await self.call(f"R=F({py_str(CONFIG_PATH)})")
        try:
            return {str(k): str(v) for k, v in dict(json.loads(str(text))).items()}
        except (ValueError, TypeError) as err:
            raise DeviceError(f"{CONFIG_PATH} on the board is not a JSON object") from err

    async def file_hash(self, path: str) -> tuple[int, str]:
        """(size, sha256 hex) of a file on the board, or (-1, '') if it does not exist."""
        folder, name = _split(path)
        got = await self.call(f"R=S({py_str(folder)},{py_str(name)},{py_str(path)})")
        try:
            size, digest = got
        except (ValueError, TypeError) as err:
            raise ProtocolError(f"hash returned something unexpected: {str(got)[:80]!r}") from err
        return int(size), str(digest)

    async def _ensure_dirs(self, path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        cur = ""
        for part in parts:
            parent = cur or "/"
            cur = f"{cur}/{part}"
            await self.call(f"M({py_str(parent)},{py_str(part)},{py_str(cur)})")

    async def write_file(
        self, path: str, data: bytes, progress: ProgressCallback = NO_PROGRESS, *, label: str = "write"
    ) -> int:
        """Write `data` to `path` through a temp file verified by sha256; resume a partial temp file.

        Each piece goes through the checked helper and is appended only at the offset the host names,
        so the temp file always holds a prefix of `data`. Returns the byte offset the write resumed from.
        """
        tmp = path + ".part"
        want = hashlib.sha256(data).hexdigest()
        await self._ensure_dirs(path)
        size, prefix_hash = await self.file_hash(tmp)
        start = 0
        if 0 < size <= len(data) and prefix_hash == hashlib.sha256(data[:size]).hexdigest():
            start = size  # a previous attempt got this far: keep it
        offset = start
        failures = 0
        while True:
            piece = data[offset : offset + self.chunk]
            await self._ensure_helper(lib=True)
            ok, got = await self._attempt(f"R=A({py_str(tmp)},{offset})".encode(), piece)
            if not ok:
                failures += 1
                if failures > MAX_FAILURES:
                    raise DeviceTimeout(f"{self.session.name}: {path}: writes keep failing")
                self.chunk = max(MIN_CHUNK, self.chunk // 2)
                continue
            failures = 0
            self.chunk = min(WRITE_CHUNK, self.chunk + CHUNK_STEP)
            # A returns the temp file's size; every append was checked and made at its exact offset,
            # so that size is how much of `data` the board holds (-1: the file vanished, start over).
            offset = got if isinstance(got, int) and 0 <= got <= len(data) else 0
            progress(Progress(label, offset, len(data)))
            if offset >= len(data):
                break
        folder, name = _split(path)
        _, tmp_name = _split(tmp)
        size, digest = await self.file_hash(tmp)
        if digest != want:
            await self.call(f"K({py_str(folder)},{py_str(tmp_name)},{py_str(tmp)})")
            raise DeviceError(f"{path}: board has sha256 {digest[:12]}, expected {want[:12]}")
        await self.call(f"V({py_str(folder)},{py_str(tmp_name)},{py_str(tmp)},{py_str(name)},{py_str(path)})")
        return start

    async def flash(self, image: FirmwareImage, progress: ProgressCallback = NO_PROGRESS) -> FlashResult:
        """Install an app bundle: each file written in chunks and verified by hash, manifest last."""
        ident = await self.identify()
        before = ident.firmware_version
        if not image.files or not image.verify():
            return FlashResult(False, before, before, "bundle does not match its sha256; not sent")
        if before == image.version:
            return FlashResult(True, before, before, "already at target version")
        total = image.size
        done = 0
        sent = 0
        resumed_from = 0
        files: dict[str, str] = {}
        manifest = {"version": image.version, "sha256": image.sha256, "files": files}
        for path, blob in image.files:
            full = "/" + path.lstrip("/")
            digest = hashlib.sha256(blob).hexdigest()
            files[full] = digest
            _, have = await self.file_hash(full)
            if have != digest:

                def file_progress(p: Progress, base: int = done) -> None:
                    progress(Progress("flash", base + p.done, total))

                try:
                    start = await self.write_file(full, blob, file_progress, label="flash")
                except DeviceError as err:
                    return FlashResult(False, before, before, str(err), resumed_from, sent)
                resumed_from = resumed_from or (done + start if start else 0)
                sent += len(blob) - start
            else:
                resumed_from = resumed_from or done + len(blob)
            done += len(blob)
            progress(Progress("flash", done, total))
        try:
            await self.write_file(APP_MANIFEST, json.dumps(manifest, sort_keys=True).encode())
        except DeviceError as err:
            return FlashResult(False, before, before, str(err), resumed_from, sent)
        progress(Progress("boot", 0, 1))
        await self.reboot()
        after = (await self.identify()).firmware_version
        progress(Progress("boot", 1, 1))
        if after != image.version:
            return FlashResult(False, before, after, "manifest not readable after reboot", resumed_from, sent)
        return FlashResult(True, before, after, "", resumed_from, sent)

    async def reboot(self) -> None:
        """Soft reset through the raw REPL (Ctrl-D on an empty line), then back to the raw prompt.

        On a noisy line the Ctrl-D can be lost; the helper vanishing with the old interpreter is the
        proof that the board did reset, so the reset is repeated until the helper is gone.
        """
        s = self.session
        for _ in range(RESYNC_ATTEMPTS):
            async with s.lock:
                s.discard()
                await s.write(repl.CTRL_C + repl.CTRL_D)
                try:
                    await s.wait_data(self.ack_timeout, "soft reboot")
                    await s.read_until(b">", self.reboot_timeout)
                except DeviceTimeout:
                    pass
                s.discard()
            if not self._stub_ok:
                break  # no helper to disprove the reset with: trust the board's answer
            for _ in range(REBOOT_PINGS):
                ok, _ = await self._attempt(b"", b"", timeout=self.ack_timeout * 2)
                if ok:
                    break
            else:
                break  # the helper is gone: the interpreter was reset
        self._stub_ok = self._q_ok = self._lib_ok = False
        self._suspect = 0
