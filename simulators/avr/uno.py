"""An Arduino Uno under emulation (simavr): build it, start it, read what its pins and UART saw.

`build()` runs this folder's Makefile into `var/avr/` (make rebuilds only what changed, so the
result is a cache). `EmulatedUno` starts the `uno` harness: an ATmega328P at 16 MHz running the
real Optiboot, UART0 on a pty whose open (or DTR toggle through B0) resets the chip as a Uno's
USB-serial chip does. See uno.c for the method and README.md for the parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parents[1] / "var" / "avr"
# The tools and Debian packages the build needs (see .ci/run).
TOOLS = ("gcc", "make", "avr-gcc", "avr-g++", "avr-objcopy", "avr-size", "avrdude")
HEADERS = (Path("/usr/include/simavr/sim_avr.h"), Path("/usr/share/arduino/hardware/arduino/avr/cores"))
# The harness prints its pty at once; a cold start under load still takes well under this.
START_TIMEOUT = 10.0


class BuildError(RuntimeError):
    """The emulator or the sketch could not be built."""


def missing_tools() -> list[str]:
    """What is not installed among the build's tools and packages (empty: all there)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    return missing + [str(p) for p in HEADERS if not p.exists()]


@dataclass(frozen=True, slots=True)
class Build:
    out: Path
    harness: Path
    bootloader: Path

    def sketch(self, version: str) -> Path:
        return self.out / f"LabFleetFirmata-{version}.hex"


def build(versions: tuple[str, ...] = ("2.6.0",), out: Path = DEFAULT_OUT) -> Build:
    """Build the harness, Optiboot and the sketch at `versions` (blocking: run it in a thread)."""
    proc = subprocess.run(
        ["make", "-s", "-C", str(HERE), f"OUT={out}", f"VERSIONS={' '.join(versions)}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError(f"building the emulated Uno failed:\n{proc.stdout}\n{proc.stderr}")
    return Build(out, out / "uno", out / "optiboot_atmega328.hex")


@dataclass(frozen=True, slots=True)
class UnoStatus:
    """What the harness reports: resets, bytes received per region, the I/O port registers."""

    resets: int
    boot_rx: int
    app_rx: int
    dtr: bool
    in_bootloader: bool
    registers: dict[str, int]

    def pin_is_output(self, pin: int) -> bool:
        port, bit = _port_bit(pin)
        return bool(self.registers[f"ddr{port}"] >> bit & 1)

    def pin_driven_high(self, pin: int) -> bool:
        """PORTx bit: the output level, or the pull-up when the pin is an input."""
        port, bit = _port_bit(pin)
        return bool(self.registers[f"port{port}"] >> bit & 1)


def _port_bit(pin: int) -> tuple[str, int]:
    if pin < 8:
        return "d", pin
    if pin < 14:
        return "b", pin - 8
    return "c", pin - 14


class EmulatedUno:
    """One running emulated Uno; `port` is a stable path (a symlink to its pty)."""

    def __init__(self, build: Build, workdir: Path) -> None:
        self.build = build
        self.port = workdir / "uno-tty"
        self.status_path = workdir / "uno-status"
        self.flash_path = workdir / "uno-flash.bin"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Self:
        self.proc = await asyncio.create_subprocess_exec(
            str(self.build.harness),
            "--boot",
            str(self.build.bootloader),
            "--link",
            str(self.port),
            "--status",
            str(self.status_path),
            "--flash",
            str(self.flash_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), START_TIMEOUT)
        if not line.startswith(b"pty "):
            err = b""
            if self.proc.stderr is not None:
                err = await self.proc.stderr.read()
            raise BuildError(f"the emulated Uno did not start: {line!r} {err!r}")
        await self.wait_status(lambda s: True)
        return self

    async def stop(self) -> None:
        """SIGTERM: the harness writes its flash to `flash_path` and exits."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def status(self) -> UnoStatus | None:
        try:
            text = self.status_path.read_text()
        except FileNotFoundError:
            return None
        values = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
        with contextlib.suppress(KeyError, ValueError):
            return UnoStatus(
                resets=int(values["resets"]),
                boot_rx=int(values["boot_rx"]),
                app_rx=int(values["app_rx"]),
                dtr=values["dtr"] == "1",
                in_bootloader=values["in_bootloader"] == "1",
                registers={k: int(values[k]) for k in values if k[:3] in ("ddr", "por")},
            )
        return None

    async def wait_status(self, ok: Callable[[UnoStatus], bool], timeout: float = 10.0) -> UnoStatus:
        """Poll the status file until `ok(status)` holds (the harness rewrites it every 5-100 ms)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = self.status()
            if status is not None and ok(status):
                return status
            if loop.time() > deadline:
                raise TimeoutError(f"emulated Uno status never matched; last: {status}")
            await asyncio.sleep(0.02)
