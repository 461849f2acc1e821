"""MicroPython boards (ESP32-, Pico-, micro:bit-class kits): identity, health, config, files, app bundles.

Layer 3 over the checked helper (`drivers.mpy_checked`), itself over the raw REPL (`drivers.mpy_repl`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from drivers.codecs import repl
from drivers.codecs.repl import py_str
from drivers.errors import DeviceError, DeviceTimeout, ProtocolError
from drivers.mpy_checked import CHUNK_STEP, MAX_FAILURES, MIN_CHUNK, WRITE_CHUNK, CheckedRepl
from drivers.mpy_repl import RESYNC_ATTEMPTS
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

# Pings that must all fail before a reboot is believed (the helper is gone after a soft reset).
REBOOT_PINGS = 6
# Health thresholds: a board below 8 KiB free heap fails allocations soon; under 5% free flash
# it cannot take the next app update.
HEAP_FAULT_BYTES = 8 * 1024
HEAP_LOW_FRACTION = 0.15
FS_LOW_FRACTION = 0.05

CONFIG_PATH = "/lf_config.json"
APP_MANIFEST = "/lf_app.json"


def _split(path: str) -> tuple[str, str]:
    folder, _, name = path.rpartition("/")
    return folder or "/", name


class MicroPythonBoard(CheckedRepl):
    """One connection to one MicroPython board, held in the raw REPL, its operations run checked."""

    family = Family.MICROPYTHON
    identity: DeviceIdentity | None = None

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
