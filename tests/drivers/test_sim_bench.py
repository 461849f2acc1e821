"""Simulated kits over memory links, and the bench CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from drivers.errors import LinkClosed
from drivers.firmata import FirmataBoard
from drivers.links import Link, MemoryHub
from drivers.micropython import MicroPythonBoard
from drivers.robot import RobotDevice
from simulators.serial.base import SimDevice
from simulators.serial.bench import run_cli
from simulators.serial.firmata import FirmataSim
from simulators.serial.micropython import MicroPythonSim
from simulators.serial.robot import RobotSim


async def _serve(sim: SimDevice, incoming: asyncio.Queue[Link]) -> None:
    link = await incoming.get()
    with contextlib.suppress(LinkClosed):
        await sim.serve(link)


@pytest.mark.parametrize("family", ["robot", "micropython", "firmata"])
async def test_every_simulated_family_identifies_over_a_memory_link(family: str) -> None:
    hub = MemoryHub()
    sims: dict[str, SimDevice] = {
        "robot": RobotSim(uid="m1"),
        "micropython": MicroPythonSim(unique_id=b"\x0a\x0b"),
        "firmata": FirmataSim(usb_serial="F1"),
    }
    incoming = hub.listen(family)
    server = asyncio.create_task(_serve(sims[family], incoming), name=f"sim-{family}")
    opener = {"robot": RobotDevice.open, "micropython": MicroPythonBoard.open, "firmata": FirmataBoard.open}
    try:
        device = await opener[family](f"memory://{family}", memory_hub=hub)
        ident = await device.identify()
        await device.aclose()
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
    assert ident.family.value == family and ident.firmware_version


async def test_bench_cli_prints_one_usb_identity_per_device(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli(["--count", "3", "--seconds", "0", "--with-firmata"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["family"] for d in lines] == ["micropython", "firmata", "robot"]
    assert all(d["path"].startswith("/dev/pts/") and d["hardware_id"].startswith("usb-") for d in lines)
