"""Bounded failure: a kit on a silent line, or one whose flash stalls, is given up within its budget, the
progress shows each retry as it starts, and the reason names every attempt's failure (issue 18, point 5).

The budgets are the Provisioner's parameters (60 s and 90 s in use); here they are seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import pytest

from drivers.links import Link
from drivers.provisioning import AttachedDevice, DeviceProgress, Outcome, Provisioner, ProvisionPlan
from drivers.types import DeviceIdentity, Family, FirmwareImage
from simulators.serial.base import SimDevice, UsbIdentity
from simulators.serial.bench import SimBench
from simulators.serial.robot import RobotSim

# Long enough for one identify on a loaded CI machine, short enough that three attempts would exceed it.
LINE_BUDGET = 3.0
SLACK = 2.0  # closing the port and the event loop's own latency on a busy machine


@dataclass
class SilentSim(SimDevice):
    """A board that never answers: a dead sketch, or a line at the wrong speed that nothing decodes."""

    family_: Family
    serial: str
    received: int = 0

    def __post_init__(self) -> None:
        self.family = self.family_
        ids = {
            Family.ROBOT: (0x1209, 0x000A),
            Family.MICROPYTHON: (0x10C4, 0xEA60),
            Family.FIRMATA: (0x2341, 0x0043),
        }
        vid, pid = ids[self.family_]
        self.usb = UsbIdentity(vid, pid, self.serial)

    async def serve(self, link: Link) -> None:
        while True:
            self.received += len(await link.read())


@dataclass
class NoisySim(SilentSim):
    """A board on a noisy line: every byte the host sends is answered with line noise (seeded), so each frame
    the host reads is garbage, as at the wrong speed or with a bad cable."""

    seed: int = 18

    async def serve(self, link: Link) -> None:
        rng = random.Random(self.seed)
        while True:
            self.received += len(await link.read())
            await link.write(rng.randbytes(rng.randint(1, 96)))


def plan_for(dev: AttachedDevice, ident: DeviceIdentity) -> ProvisionPlan:
    return ProvisionPlan({}, None)


@pytest.mark.parametrize("line", [SilentSim, NoisySim])
@pytest.mark.parametrize("family", [Family.ROBOT, Family.MICROPYTHON, Family.FIRMATA])
async def test_a_silent_or_noisy_line_is_given_up_within_the_budget_naming_every_attempt(
    family: Family, line: type[SilentSim]
) -> None:
    events: list[DeviceProgress] = []
    loop = asyncio.get_running_loop()
    async with SimBench() as bench:
        sim = line(family, f"{line.__name__[:-3].upper()}{family.value.upper()}")
        bench.add(sim)
        await bench.start()
        [dev] = bench.attached()
        started = loop.time()
        provisioner = Provisioner(progress=events.append, line_budget=LINE_BUDGET, locate=bench.locate)
        [result] = await provisioner.run([dev], plan_for)
        took = loop.time() - started
    assert result.outcome is Outcome.FAILED  # (a Firmata host may only listen: waiting for the hand-over)
    assert took <= LINE_BUDGET + SLACK, f"{family}: gave up after {took:.1f} s"
    assert result.reason.startswith("attempt 1: ")
    assert result.reason.split("; ")[-1].startswith(f"attempt {result.attempts}: ")
    assert "gave up after" in result.reason or result.attempts == 3
    retries = [e for e in events if e.step == "retry"]
    assert [(e.done, e.total) for e in retries] == [(n, 3) for n in range(2, result.attempts + 1)]


async def test_a_stalled_flash_gets_the_flash_budget_then_is_given_up() -> None:
    events: list[DeviceProgress] = []
    image = FirmwareImage.from_bytes("2.0.0", random.Random(9).randbytes(8_000))
    loop = asyncio.get_running_loop()
    async with SimBench() as bench:
        robot = RobotSim(uid="5a11ed01", usb_serial="EB-STALL01", erase_time=3600.0)  # its erase never ends
        bench.add(robot)
        await bench.start()
        [dev] = bench.attached()
        started = loop.time()
        provisioner = Provisioner(progress=events.append, line_budget=1.0, flash_budget=2.5)
        [result] = await provisioner.run([dev], lambda d, i: ProvisionPlan({}, image))
        took = loop.time() - started
    # Past the line budget (the flash had started), within the flash budget.
    assert result.outcome is Outcome.FAILED and 1.0 < took <= 2.5 + SLACK
    assert (
        result.reason
        == f"attempt 1: no progress within the time budget (gave up after {result.seconds:.0f} s)"
    )
    assert robot.busy_answers > 0 and robot.slots[0].version == "1.0.0"
    assert events[-1].step == "failed" and events[-1].detail == result.reason
