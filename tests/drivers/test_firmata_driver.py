"""StandardFirmata driver against the simulated Uno over real ptys (Firmata + Optiboot flashing)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from drivers.codecs import ihex
from drivers.codecs.firmata import PinMode
from drivers.errors import DeviceTimeout, LinkClosed
from drivers.firmata import FIRMATA_BAUD, FirmataBoard
from drivers.types import FirmwareImage, HealthStatus
from firmware_profiles.loader import DEFAULT_PROFILE_DIR, load_profile
from simulators.serial.faults import FaultPlan
from simulators.serial.firmata import FirmataSim, sketch_image
from simulators.serial.pty import SimRunner

NEW = FirmwareImage.from_bytes("2.6", sketch_image("StandardFirmata.ino", 2, 6))


@pytest.fixture
async def runner() -> AsyncIterator[SimRunner]:
    run = SimRunner(FirmataSim(usb_serial="75830333238351D0E1C1"), name="uno-sim")
    await run.plug()
    yield run
    await run.aclose()


def sim_of(run: SimRunner) -> FirmataSim:
    assert isinstance(run.device, FirmataSim)
    return run.device


async def open_board(run: SimRunner) -> FirmataBoard:
    return await FirmataBoard.open(
        run.url, reset=run.pulse_reset, hardware_id="usb-2341-0043-test", query_timeout=0.3, boot_timeout=0.6
    )


async def test_identify_uses_version_firmware_report_and_capabilities(runner: SimRunner) -> None:
    async with await open_board(runner) as board:
        ident = await board.identify()
    assert ident.hardware_id == "usb-2341-0043-test"
    assert ident.firmware_version == "2.5.0"
    assert ident.detail("firmware_name") == "StandardFirmata-2.5.0.ino"
    assert ident.model == "arduino-uno-class" and ident.detail("analog_pins") == "6"


async def test_health_samples_analog_pin_and_flags_sagging_supply(runner: SimRunner) -> None:
    async with await open_board(runner) as board:
        good = await board.read_health()
        sim_of(runner).supply_raw = 700
        sagging = await board.read_health()
        await board.identify()  # a round trip: the sim has handled the report-off by now
    assert good.status == HealthStatus.OK and good.reading("a0_raw") == 1000
    assert sagging.status == HealthStatus.DEGRADED
    assert sim_of(runner).reporting == set()  # reporting switched off again


async def test_config_sets_pin_modes_verified_by_pin_state_query(runner: SimRunner) -> None:
    async with await open_board(runner) as board:
        await board.identify()
        ok = await board.apply_config({"pin.13": "output", "pin.3": "pwm", "sampling_interval_ms": "50"})
        refused = await board.apply_config({"pin.13": "analog"})
    sim = sim_of(runner)
    assert ok.ok and sim.pin_modes[3] == PinMode.PWM and sim.sampling_ms == 50
    assert not refused.ok and "does not support ANALOG" in refused.reason


async def test_flash_through_bootloader_then_firmata_reports_new_version(runner: SimRunner) -> None:
    async with await open_board(runner) as board:
        result = await board.flash(NEW)
        ident = await board.identify()
    assert result.ok and (result.before, result.after) == ("2.5.0", "2.6")
    # A real Uno resets twice: when the port is opened (DTR) and when the driver pulses DTR to reach the
    # bootloader for the flash.
    assert sim_of(runner).resets == 2 and ident.firmware_version == "2.6"
    assert bytes(sim_of(runner).flash_mem[: len(NEW.data)]) == NEW.data


async def test_reboot_resets_the_board_which_answers_again_with_its_configuration_restored(
    runner: SimRunner,
) -> None:
    async with await open_board(runner) as board:
        await board.apply_config({"pin.3": "pwm"})
        await board.reboot()
        ident = await board.identify()
    sim = sim_of(runner)
    executed = [type(m).__name__ for m in sim.executed]
    # The reset ran (it put pin 3 back to OUTPUT), then the driver set PWM again: Firmata keeps nothing.
    reset_at = executed.index("SystemReset")
    assert "SetPinMode" in executed[reset_at:]
    assert sim.pin_modes[3] == PinMode.PWM and ident.firmware_version == "2.5.0"


async def test_sketch_that_does_not_start_is_reported_as_failure(runner: SimRunner) -> None:
    async with await open_board(runner) as board:
        sim_of(runner).fail_boot = True  # the sketch flashed next (not the one the open restarted)
        result = await board.flash(NEW)
    assert not result.ok and "does not answer" in result.reason


async def test_flash_without_reset_line_is_refused_cleanly(runner: SimRunner) -> None:
    async with await FirmataBoard.open(runner.url) as board:
        result = await board.flash(NEW)
    assert not result.ok and "reset line" in result.reason


async def test_unplug_mid_flash_then_replug_skips_pages_already_written() -> None:
    image = FirmwareImage.from_bytes("3.0", bytes(range(256)) * 40 + b"LFFW/LabFirmata/3.0\x00")
    sim = FirmataSim(usb_serial="X1")
    run = SimRunner(sim, faults=FaultPlan(unplug_after_rx_bytes=6_000), name="uno-unplug")
    await run.plug()
    try:
        board = await FirmataBoard.open(run.url, reset=run.pulse_reset, query_timeout=0.3)
        with pytest.raises(LinkClosed):
            await board.flash(image)
        await board.aclose()
        written_before = sim.pages_written
        assert written_before > 0
        await run.plug()
        board = await FirmataBoard.open(run.url, reset=run.pulse_reset, query_timeout=0.3)
        # After power-up the half-written sketch does not answer; flashing repairs it.
        result = await board.flash(image)
        await board.aclose()
    finally:
        await run.aclose()
    assert result.ok and result.after == "3.0"
    assert result.resumed_from >= (written_before - 1) * 128


async def test_slow_board_at_uart_pace_still_flashes() -> None:
    sim = FirmataSim(usb_serial="SLOW1")
    run = SimRunner(sim, faults=FaultPlan(delay=0.002, baud=115200), name="uno-slow")
    await run.plug()
    try:
        async with await FirmataBoard.open(run.url, reset=run.pulse_reset) as board:
            result = await board.flash(NEW)
    finally:
        await run.aclose()
    assert result.ok and result.after == "2.6"


async def test_one_percent_byte_errors_still_flash_and_configure_and_whatever_noise_ran_is_put_back() -> None:
    """Firmata and STK500 v1 carry no checksum, so a damaged command that still parses IS executed by a
    real StandardFirmata or Optiboot (docs/protocol-serial-kits.md, "Noise"). What the driver guarantees
    is the end state: every page read back equal to the image, every pin's mode read back as intended
    (pins the noise touched are restored), and answers believed only once two agree."""
    sketch = random.Random(5).randbytes(1_500) + b"LFFW/StandardFirmata-2.5.1.ino/2.5\x00"
    image = FirmwareImage.from_bytes("2.5.1", ihex.encode_ihex(sketch))
    sim = FirmataSim(usb_serial="NOISY1")
    run = SimRunner(sim, faults=FaultPlan(byte_error_rate=0.01, seed=2024), name="uno-noisy")
    await run.plug()
    sent: list[object] = []
    try:
        board = await FirmataBoard.open(
            run.url,
            reset=run.pulse_reset,
            query_timeout=0.15,
            boot_timeout=1.5,
            stk_timeout=0.15,
            journal=sent,
        )
        try:
            before = await board.identify()
            flashed = await board.flash(image)
            config = await board.apply_config({"pin.3": "pwm", "pin.4": "input", "pin.13": "output"})
            health = await board.read_health()
        finally:
            await board.aclose()
    finally:
        await run.aclose()
    assert before.firmware_version == "2.5.0"
    assert flashed.ok and flashed.after == "2.5.1"
    binary = ihex.parse_ihex(image.data)
    assert bytes(sim.flash_mem[: len(binary)]) == binary
    expected = [int(PinMode.ANALOG) if p >= 14 else int(PinMode.OUTPUT) for p in range(20)]
    expected[3], expected[4] = int(PinMode.PWM), int(PinMode.INPUT)
    assert config.ok and sim.pin_modes == expected
    assert health.reading("a0_raw") == 1000
    # The line really was noisy: the board saw commands the host never sent (and they were undone).
    assert (
        sim.watchdog_resets
        + sum(1 for m in sim.executed if m not in sent)
        + sum(1 for c in sim.stk_executed if c not in sent)
        > 0
    )


async def test_firmata_at_57600_and_optiboot_at_115200_as_on_a_uno(runner: SimRunner) -> None:
    """The sketch's UART runs at StandardFirmata's 57600 and Optiboot's at 115200; the simulated
    Uno reads the speed the host set on the pty, and a host at the other speed gets nothing."""
    sim = sim_of(runner)
    async with await open_board(runner) as board:
        lost_at_plug_in = sim.speed_mismatches  # the power-on greeting, sent before the host set a speed
        assert (await board.identify()).firmware_version == "2.5.0"
        result = await board.flash(NEW)  # through Optiboot: the driver switches to 115200 and back
        assert result.ok and result.after == "2.6"
        assert runner.port is not None and runner.port.line_speed() == 57600
    assert sim.speed_mismatches == lost_at_plug_in
    # The old driver's speed: the board never answers.
    slow = await FirmataBoard.open(runner.url, baud=115200, query_timeout=0.3)
    async with slow:
        with pytest.raises(DeviceTimeout):
            await slow.identify()
    assert sim.speed_mismatches > lost_at_plug_in


def test_driver_speed_is_the_profile_speed() -> None:
    serial = load_profile(DEFAULT_PROFILE_DIR / "kit-uno-firmata.yaml").serial
    assert serial is not None and serial.baud == FIRMATA_BAUD == 57600
