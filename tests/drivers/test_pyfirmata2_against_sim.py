"""pyfirmata2, a Firmata host library makers use, against the simulated Uno over a real pty.

The library opens the port and waits for the board's auto-reset (DTR) and StandardFirmata's version
announcement, as on a real Uno; it reads analog and digital inputs only through reporting (0xD0 for ports).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pyfirmata2
import pytest

from simulators.serial.firmata import FirmataSim, Mode
from simulators.serial.pty import SimRunner

# pyfirmata2 itself waits 5 s after opening the port for the auto-reset; the rest is a few round trips.
BOARD_TIMEOUT = 60.0


@pytest.fixture
async def uno() -> AsyncIterator[SimRunner]:
    sim = FirmataSim(usb_serial="85736323930351E0A1C1", auto_reset_on_open=True, wired={2: 1})
    run = SimRunner(sim, name="uno-pyfirmata2")
    await run.plug()
    yield run
    await run.aclose()


def sim_of(run: SimRunner) -> FirmataSim:
    assert isinstance(run.device, FirmataSim)
    return run.device


async def wait_until(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOARD_TIMEOUT
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_pyfirmata2_reads_version_pins_and_writes_outputs(uno: SimRunner) -> None:
    sim = sim_of(uno)
    resets_before = sim.resets
    board: Any = await asyncio.wait_for(asyncio.to_thread(pyfirmata2.Arduino, uno.path), BOARD_TIMEOUT)
    try:
        # Opening the port reset the chip; Optiboot handed over and StandardFirmata announced itself.
        assert sim.resets == resets_before + 1 and sim.mode is Mode.SKETCH
        assert board.get_firmata_version() == (2, 5)
        assert (board.firmware, board.firmware_version) == ("StandardFirmata-2.5.0.ino", (2, 5))

        seen: dict[str, list[Any]] = {"a0": [], "d2": [], "d3": []}
        lock = threading.Lock()

        def record(key: str) -> Callable[[Any], None]:
            def callback(value: Any) -> None:
                with lock:
                    seen[key].append(value)

            return callback

        board.samplingOn(20)
        a0 = board.analog[0]
        a0.register_callback(record("a0"))
        a0.enable_reporting()
        d2 = board.get_pin("d:2:i")  # wired high on the bench
        d2.register_callback(record("d2"))
        d3 = board.get_pin("d:3:u")  # pull-up, nothing wired: reads high
        d3.register_callback(record("d3"))
        d3.enable_reporting()  # 0xD0: report digital port 0
        await wait_until(lambda: bool(seen["a0"]) and True in seen["d2"] and True in seen["d3"], "readings")
        assert seen["a0"][-1] == pytest.approx(sim.supply_raw / 1023, abs=1e-3)
        # pyfirmata2 keeps the last reported level (it refuses to poll inputs): both read high.
        assert 0 in sim.reporting_ports and d3.value is True and d2.value is True

        sim.wired[2] = 0  # the bench pulls pin 2 low: a reporting port sends the change
        await wait_until(lambda: bool(seen["d2"]) and seen["d2"][-1] is False, "pin 2 going low")

        led = board.get_pin("d:13:o")
        led.write(1)
        await wait_until(lambda: sim.pin_values[13] == 1, "pin 13 driven high")
        led.write(0)
        await wait_until(lambda: sim.pin_values[13] == 0, "pin 13 driven low")
    finally:
        await asyncio.to_thread(board.exit)
