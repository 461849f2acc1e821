"""A real microcontroller under emulation: an ATmega328P in simavr running the real Optiboot and a
Firmata sketch built with avr-gcc against the Arduino core (simulators/avr). avrdude, the tool
makers use, is the reference for what flashing through the bootloader must leave in the chip."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.codecs import ihex
from drivers.discovery import PortInfo, PortWatcher
from drivers.edge import EdgeSupervisor
from drivers.firmata import FirmataBoard
from drivers.types import DeviceIdentity, Family, Health
from firmware_profiles import DEFAULT_PROFILE_DIR
from fleet.domain.clock import SystemClock
from fleet.domain.enums import Role
from fleet.domain.permissions import Principal
from fleet.persistence.db import create_engine, session_factory, unit_of_work, upgrade_sync
from fleet.services.seed import seed_demo
from simulators.avr.uno import Build, EmulatedUno, build, missing_tools
from tests.conftest import need_external

pytestmark = pytest.mark.external

LABFLEET = str(Path(sys.executable).parent / "labfleet")
OLD, TARGET = "2.5.9", "2.6.0"
FLASH_BYTES = 32 * 1024
# An Arduino Uno R3's USB ids: what discovery sees on the bench.
UNO_VID, UNO_PID = 0x2341, 0x0043


@pytest.fixture(scope="module")
def uno_build() -> Build:
    missing = missing_tools()
    if missing:
        need_external(f"simavr, avr-gcc, arduino-core-avr and avrdude ({', '.join(missing)} missing)")
    return build((OLD, TARGET))


def preload(uno: EmulatedUno, hex_path: Path) -> None:
    """Put a sketch in the chip's flash before it starts, as if flashed earlier (no avrdude run)."""
    image = ihex.parse_ihex(hex_path.read_bytes())
    uno.flash_path.write_bytes(image + b"\xff" * (FLASH_BYTES - len(image)))


@pytest.fixture
async def uno(uno_build: Build, tmp_path: Path) -> AsyncIterator[EmulatedUno]:
    chip = EmulatedUno(uno_build, tmp_path)
    yield chip
    await chip.stop()


def avrdude(port: Path, *ops: str) -> None:
    args = ["avrdude", "-q", "-q", "-p", "m328p", "-c", "arduino", "-b", "115200", "-P", str(port)]
    for op in ops:
        args += ["-U", op]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def profiles_for(uno_build: Build, folder: Path) -> Path:
    """The shipped Uno profile with the two sketch builds as its versions (target: TARGET)."""
    (folder / "artifacts").mkdir(parents=True)
    versions = []
    for version in (OLD, TARGET):
        name = f"artifacts/kit-uno-firmata-{version}.hex"
        shutil.copy(uno_build.sketch(version), folder / name)
        data = (folder / name).read_bytes()
        versions.append(
            f"  - version: {version}\n    artifact: {name}\n    size: {len(data)}\n"
            f"    sha256: {hashlib.sha256(data).hexdigest()}\n    min_hardware_revision: 3\n"
            f"    release_notes: LabFleetFirmata {version} built with avr-gcc.\n"
        )
    shipped = (DEFAULT_PROFILE_DIR / "kit-uno-firmata.yaml").read_text()
    head, _, rest = shipped.partition("versions:\n")
    tail = rest[rest.index("target_version:") :].replace("target_version: 2.5.1", f"target_version: {TARGET}")
    (folder / "kit-uno-firmata.yaml").write_text(head + "versions:\n" + "".join(versions) + tail)
    return folder


async def seeded(url: str) -> None:
    """The demo district (schools, device models with their profiles) in a fresh database."""
    await asyncio.to_thread(upgrade_sync, url)
    engine = create_engine(url)
    seeder = Principal(name="seed", role=Role.ADMIN, district_wide=True, school_ids=frozenset())
    async with unit_of_work(session_factory(engine)) as session:
        await seed_demo(session, seeder, SystemClock())
    await engine.dispose()


def labfleet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LABFLEET, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


async def test_provision_flashes_through_optiboot_what_avrdude_flashes(
    uno_build: Build, tmp_path: Path
) -> None:
    image = ihex.parse_ihex(uno_build.sketch(TARGET).read_bytes())
    # The reference: avrdude writes the target sketch into a blank chip through Optiboot (and verifies
    # it); the harness writes the chip's whole flash out when it stops.
    (tmp_path / "ref-chip").mkdir()
    async with EmulatedUno(uno_build, tmp_path / "ref-chip") as ref:
        await asyncio.to_thread(avrdude, ref.port, f"flash:w:{uno_build.sketch(TARGET)}:i")
    reference = (tmp_path / "ref-chip" / "uno-flash.bin").read_bytes()
    assert reference[: len(image)] == image

    # A kit as it arrives: last term's sketch, flashed with avrdude.
    chip_dir = tmp_path / "kit-chip"
    chip_dir.mkdir()
    async with EmulatedUno(uno_build, chip_dir) as kit:
        await asyncio.to_thread(avrdude, kit.port, f"flash:w:{uno_build.sketch(OLD)}:i")
        env = {
            **os.environ,
            "LABFLEET_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/bench.db",
            "COLUMNS": "200",
        }
        await seeded(env["LABFLEET_DATABASE_URL"])
        profiles = profiles_for(uno_build, tmp_path / "profiles")
        resets_before = kit.status()
        assert resets_before is not None
        run = await asyncio.to_thread(
            labfleet,
            env,
            "provision",
            "--school",
            "north-primary",
            "--kit",
            f"firmata={kit.port}",
            "--profiles",
            str(profiles),
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "1/1 provisioned and recorded" in run.stdout
        assert f"{OLD} -> {TARGET}" in run.stdout
        # The flash went through the bootloader: the chip was reset into it and received STK500 there.
        after = kit.status()
        assert after is not None and after.resets > resets_before.resets
        assert after.boot_rx > resets_before.boot_rx

        # The driver reads the new version and the pins from the running sketch.
        board = await FirmataBoard.open(f"serial://{kit.port}", hardware_id="emulated-uno")
        try:
            ident = await board.identify()
        finally:
            await board.aclose()
        assert ident.firmware_version == TARGET
        assert dict(ident.details)["firmware_name"] == f"LabFleetFirmata-{TARGET}"
        assert ident.model == "arduino-uno-class"
        assert (dict(ident.details)["pins"], dict(ident.details)["analog_pins"]) == ("20", "6")

        await asyncio.to_thread(avrdude, kit.port, f"flash:r:{tmp_path / 'provisioned.bin'}:r")
    # avrdude reads all 32 KiB back through the bootloader: what provisioning left in the chip is what
    # avrdude left in the reference chip, byte for byte (the bootloader and the erased rest included).
    provisioned = (tmp_path / "provisioned.bin").read_bytes()
    assert len(provisioned) == len(reference) == FLASH_BYTES
    assert provisioned == reference
    # ...and the harness's own copy of the flash agrees with what the bootloader read back.
    assert (chip_dir / "uno-flash.bin").read_bytes() == provisioned


async def test_the_driver_waits_for_the_bootloader_after_the_reset_on_open(
    uno: EmulatedUno, uno_build: Build
) -> None:
    preload(uno, uno_build.sketch(TARGET))
    await uno.start()
    board = await FirmataBoard.open(f"serial://{uno.port}", hardware_id="emulated-uno")
    try:
        ident = await board.identify()
    finally:
        await board.aclose()
    assert ident.firmware_version == TARGET
    status = await uno.wait_status(lambda s: not s.dtr)
    assert status.resets == 1  # the open reset the chip
    assert status.boot_rx == 0  # nothing the driver sent landed in Optiboot
    assert status.app_rx > 0

    # The hazard is real on the chip: without the wait, the first query goes to the bootloader.
    hasty = await FirmataBoard.open(f"serial://{uno.port}", hardware_id="emulated-uno", reset_on_open=False)
    try:
        await hasty.identify()
    finally:
        await hasty.aclose()
    status = await uno.wait_status(lambda s: s.resets == 2 and not s.dtr)
    assert status.boot_rx > 0


class _Events:
    def __init__(self) -> None:
        self.online_count = 0

    async def online(self, port: PortInfo, identity: DeviceIdentity) -> None:
        self.online_count += 1

    async def offline(self, hardware_id: str, reason: str) -> None:
        pass

    async def health(self, hardware_id: str, health: Health) -> None:
        pass


async def test_the_agent_applies_pin_modes_again_after_reopening_the_port(
    uno: EmulatedUno, uno_build: Build
) -> None:
    preload(uno, uno_build.sketch(TARGET))
    await uno.start()
    ports: list[PortInfo] = [PortInfo(str(uno.port), UNO_VID, UNO_PID, "EMU0001")]
    events = _Events()
    supervisor = EdgeSupervisor(PortWatcher(lambda: list(ports)), events)
    try:
        await supervisor.poll_once()
        (hw,) = supervisor.devices
        assert supervisor.devices[hw].attached.family is Family.FIRMATA
        result = await supervisor.command(hw, "apply_config", {"config": {"pin.2": "PULLUP"}})
        assert result["ok"], result
        status = await uno.wait_status(lambda s: s.pin_driven_high(2))
        assert not status.pin_is_output(2)

        ports.clear()  # the agent lets go of the port (a USB hub reset, an agent restart)
        await supervisor.poll_once()
        assert hw not in supervisor.devices
        ports.append(PortInfo(str(uno.port), UNO_VID, UNO_PID, "EMU0001"))
        await supervisor.poll_once()  # opening resets the chip: the sketch starts with pin 2 an output
        assert hw in supervisor.devices and events.online_count == 2
        status = await uno.wait_status(lambda s: s.resets == 2)
        status = await uno.wait_status(lambda s: s.pin_driven_high(2) and not s.pin_is_output(2))
        assert status.resets == 2
    finally:
        await supervisor.aclose()
