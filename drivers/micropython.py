"""MicroPython boards (ESP32-, Pico-, micro:bit-class kits) over the raw REPL, as mpremote drives it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Self

from drivers.codecs import repl
from drivers.codecs.repl import ExecResult, bytes_literal, parse_literal, py_str
from drivers.errors import DeviceError, DriverError, FrameError, ProtocolError
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
# mpremote's chunk for fs writes: small enough for a board's 256-byte stdin buffer when raw paste
# is not available, and one bytes literal per line keeps the compiler's memory use low.
WRITE_CHUNK = 256
# Without raw paste there is no flow control: mpremote paces 256-byte writes 10 ms apart so the
# board's UART buffer does not overflow. We do the same.
FALLBACK_CHUNK = 256
FALLBACK_PACE = 0.01
# Soft reboot runs boot.py; a board with a slow boot.py (Wi-Fi connect) needs a while.
REBOOT_TIMEOUT = 15.0
# Health thresholds: a board below 8 KiB free heap fails allocations soon; under 5% free flash
# it cannot take the next app update.
HEAP_FAULT_BYTES = 8 * 1024
HEAP_LOW_FRACTION = 0.15
FS_LOW_FRACTION = 0.05

CONFIG_PATH = "/lf_config.json"
APP_MANIFEST = "/lf_app.json"

IDENTIFY_SCRIPT = f"""import machine, os, sys, binascii
u = os.uname()
app = open({APP_MANIFEST!r}).read() if {APP_MANIFEST[1:]!r} in os.listdir('/') else ''
print(repr((binascii.hexlify(machine.unique_id()).decode(), u.sysname, u.release, u.machine, \
sys.implementation.name, tuple(sys.implementation.version), app)))
"""

HEALTH_SCRIPT = """import gc, os, machine, time
gc.collect()
s = os.statvfs('/')
print(repr((gc.mem_free(), gc.mem_alloc(), s[0] * s[3], s[0] * s[2], machine.freq(), time.ticks_ms())))
"""

HASH_SCRIPT = """import os, hashlib, binascii
try:
    names = os.listdir({folder})
except OSError:
    names = []
if {name} in names:
    h = hashlib.sha256()
    f = open({path}, 'rb')
    size = 0
    while True:
        b = f.read(256)
        if not b:
            break
        size += len(b)
        h.update(b)
    f.close()
    print(repr((size, binascii.hexlify(h.digest()).decode())))
else:
    print(repr((-1, '')))
"""


def _split(path: str) -> tuple[str, str]:
    folder, _, name = path.rpartition("/")
    return folder or "/", name


class MicroPythonBoard:
    """One connection to one MicroPython board, held in the raw REPL."""

    family = Family.MICROPYTHON

    def __init__(self, session: StreamSession) -> None:
        self.session = session
        self.in_raw = False
        self.use_raw_paste: bool | None = None  # None: not probed yet
        self.identity: DeviceIdentity | None = None

    @classmethod
    async def open(cls, url: str, *, memory_hub: MemoryHub | None = None) -> MicroPythonBoard:
        return await cls.over(await open_link(url, memory_hub=memory_hub))

    @classmethod
    async def over(cls, link: Link) -> MicroPythonBoard:
        session = StreamSession(link, name=f"mpy:{link.url}")
        await session.start()
        board = cls(session)
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
            await s.write(b"\r" + repl.CTRL_C + repl.CTRL_C)  # interrupt a running program
            await s.write(b"\r" + repl.CTRL_A)
            await s.read_until(repl.RAW_BANNER + b">", ENTER_TIMEOUT)
            if soft_reset:
                await s.write(repl.CTRL_D)
                await s.read_until(repl.SOFT_REBOOT, REBOOT_TIMEOUT)
                await s.read_until(repl.RAW_BANNER + b">", REBOOT_TIMEOUT)
            s.discard()
            self.in_raw = True

    async def exec(self, code: str, *, timeout: float = EXEC_TIMEOUT) -> ExecResult:
        """Run `code` on the board; return its stdout and stderr."""
        s = self.session
        data = code.encode()
        async with s.lock:
            if not self.in_raw:
                raise ProtocolError("board is not in the raw REPL")
            if self.use_raw_paste is not False:
                await s.write(repl.RAW_PASTE_REQUEST)
                answer = await s.read_exact(2, timeout)
                if answer == repl.RAW_PASTE_SUPPORTED:
                    self.use_raw_paste = True
                    await self._raw_paste_write(data, timeout)
                elif answer == repl.RAW_PASTE_REFUSED:
                    self.use_raw_paste = False
                    await self._raw_write(data, timeout)
                else:
                    # An old firmware took the request as code; wait for its prompt and fall back.
                    await s.read_until(b"w REPL; CTRL-B to exit\r\n>", timeout)
                    self.use_raw_paste = False
                    await self._raw_write(data, timeout)
            else:
                await self._raw_write(data, timeout)
            out = (await s.read_until(repl.CTRL_D, timeout))[:-1]
            err = (await s.read_until(repl.CTRL_D, timeout))[:-1]
            await s.read_until(b">", timeout)
        return ExecResult(out, err)

    async def _raw_write(self, data: bytes, timeout: float) -> None:
        s = self.session
        for i in range(0, len(data), FALLBACK_CHUNK):
            await s.write(data[i : i + FALLBACK_CHUNK])
            if i + FALLBACK_CHUNK < len(data):
                await asyncio.sleep(FALLBACK_PACE)
        await s.write(repl.CTRL_D)
        ok = await s.read_exact(2, timeout)
        if ok != b"OK":
            raise ProtocolError(f"board did not accept the code (answered {ok!r})")

    async def _raw_paste_write(self, data: bytes, timeout: float) -> None:
        s = self.session
        window = int.from_bytes(await s.read_exact(2, timeout), "little")
        if window == 0:
            raise ProtocolError("board offered a zero raw-paste window")
        remain = window
        i = 0
        while i < len(data):
            while remain == 0 or s.pending():
                flow = await s.read_exact(1, timeout)
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
        await s.read_until(repl.CTRL_D, timeout)  # the board acknowledges the end of the paste

    async def run(self, code: str, *, timeout: float = EXEC_TIMEOUT) -> bytes:
        """exec() that raises DeviceError with the board's exception line when the code fails."""
        result = await self.exec(code, timeout=timeout)
        if result.failed:
            raise DeviceError(f"board raised {result.error_line()}")
        return result.out

    # ---- device operations ----------------------------------------------------------------

    async def identify(self) -> DeviceIdentity:
        out = await self.run(IDENTIFY_SCRIPT)
        try:
            uid, sysname, release, machine, impl, impl_version, app = parse_literal(out)
            manifest = json.loads(app) if app else {}
        except (FrameError, ValueError, TypeError) as err:
            raise ProtocolError(f"identify printed something unexpected: {out[:80]!r}") from err
        app_version = str(manifest.get("version", "")) if isinstance(manifest, dict) else ""
        self.identity = DeviceIdentity(
            Family.MICROPYTHON,
            f"mpy:{uid}",
            str(machine),
            app_version or "none",
            (("sysname", str(sysname)), ("micropython", str(release)), ("implementation", str(impl)),
             ("implementation_version", ".".join(str(v) for v in impl_version))),
        )
        return self.identity

    async def read_health(self) -> Health:
        out = await self.run(HEALTH_SCRIPT)
        try:
            mem_free, mem_alloc, fs_free, fs_total, freq, ticks = parse_literal(out)
        except (FrameError, ValueError, TypeError) as err:
            raise ProtocolError(f"health printed something unexpected: {out[:80]!r}") from err
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
        readings = (("heap_free_bytes", float(mem_free)), ("heap_total_bytes", float(heap_total)),
                    ("fs_free_bytes", float(fs_free)), ("fs_total_bytes", float(fs_total)),
                    ("cpu_hz", float(freq)), ("ticks_ms", float(ticks)))
        return Health(status, readings, tuple(problems))

    async def apply_config(self, config: Mapping[str, str]) -> ConfigResult:
        blob = json.dumps({str(k): str(v) for k, v in config.items()}, sort_keys=True).encode()
        try:
            await self.write_file(CONFIG_PATH, blob)
        except DeviceError as err:
            return ConfigResult(False, (), str(err))
        return ConfigResult(True, tuple(sorted(str(k) for k in config)))

    async def read_config(self) -> dict[str, str]:
        out = await self.run(f"f = open({CONFIG_PATH!r})\nprint(f.read())\nf.close()\n")
        return dict(json.loads(out.decode()))

    async def file_hash(self, path: str) -> tuple[int, str]:
        """(size, sha256 hex) of a file on the board, or (-1, '') if it does not exist."""
        folder, name = _split(path)
        out = await self.run(HASH_SCRIPT.format(path=py_str(path), folder=py_str(folder), name=py_str(name)))
        try:
            size, digest = parse_literal(out)
        except (FrameError, ValueError) as err:
            raise ProtocolError(f"hash printed something unexpected: {out[:80]!r}") from err
        return int(size), str(digest)

    async def _ensure_dirs(self, path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        cur = ""
        for part in parts:
            parent = cur or "/"
            cur = f"{cur}/{part}"
            await self.run(f"import os\nif {part!r} not in os.listdir({parent!r}):\n    os.mkdir({cur!r})\n")

    async def write_file(self, path: str, data: bytes, progress: ProgressCallback = NO_PROGRESS,
                         *, label: str = "write") -> int:
        """Write `data` to `path` through a temp file verified by sha256; resume a partial temp file.

        Returns the byte offset the write resumed from.
        """
        tmp = path + ".part"
        want = hashlib.sha256(data).hexdigest()
        await self._ensure_dirs(path)
        size, prefix_hash = await self.file_hash(tmp)
        start = 0
        if 0 < size <= len(data) and prefix_hash == hashlib.sha256(data[:size]).hexdigest():
            start = size  # a previous attempt got this far: keep it
        await self.run(f"f = open({py_str(tmp)}, {'ab' if start else 'wb'!r})\nw = f.write\n")
        try:
            for offset in range(start, len(data), WRITE_CHUNK):
                await self.run(f"w({bytes_literal(data[offset:offset + WRITE_CHUNK])})\n")
                progress(Progress(label, min(offset + WRITE_CHUNK, len(data)), len(data)))
        finally:
            if self.session.is_open:
                await self.exec("f.close()\n")
        size, digest = await self.file_hash(tmp)
        if digest != want:
            await self.run(f"import os\nos.remove({py_str(tmp)})\n")
            raise DeviceError(f"{path}: board has sha256 {digest[:12]}, expected {want[:12]}")
        d, n = _split(path)
        await self.run(f"import os\nif {n!r} in os.listdir({d!r}):\n    os.remove({py_str(path)})\n"
                       f"os.rename({py_str(tmp)}, {py_str(path)})\n")
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
        manifest = {"version": image.version, "sha256": image.sha256, "files": {}}
        for path, blob in image.files:
            full = "/" + path.lstrip("/")
            digest = hashlib.sha256(blob).hexdigest()
            manifest["files"][full] = digest  # type: ignore[index]
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
        """Soft reset through the raw REPL (Ctrl-D on an empty line), then back to the raw prompt."""
        s = self.session
        async with s.lock:
            await s.write(repl.CTRL_D)
            await s.read_until(repl.SOFT_REBOOT, REBOOT_TIMEOUT)
            await s.read_until(repl.RAW_BANNER + b">", REBOOT_TIMEOUT)
            s.discard()
