"""A USB hub full of simulated kits on real ptys, with a port lister that shows them as USB devices.

    python -m simulators.serial.bench --count 30 --seconds 60

prints one JSON line per device (path, vid, pid, serial number, family) and keeps them running.
Firmata boards need their DTR reset wired in-process (a pty has no modem lines), so the CLI
serves the robot and MicroPython families only unless asked for Firmata with --with-firmata.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from collections.abc import Iterable
from typing import Self

from drivers.discovery import PortInfo
from drivers.firmata import ResetLine
from drivers.provisioning import AttachedDevice
from drivers.types import Family
from simulators.serial.base import SimDevice
from simulators.serial.faults import FaultPlan
from simulators.serial.firmata import FirmataSim
from simulators.serial.micropython import MicroPythonSim
from simulators.serial.pty import SimRunner
from simulators.serial.robot import RobotSim


class SimBench:
    """Owns a set of SimRunners (one per simulated device)."""

    def __init__(self) -> None:
        self.runners: list[SimRunner] = []

    def add(self, device: SimDevice, *, faults: FaultPlan | None = None) -> SimRunner:
        runner = SimRunner(device, faults=faults, name=f"sim-{len(self.runners)}")
        self.runners.append(runner)
        return runner

    async def start(self) -> None:
        for runner in self.runners:
            if not runner.plugged:
                await runner.plug()

    async def aclose(self) -> None:
        for runner in self.runners:
            await runner.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def port_info(self, index: int) -> PortInfo:
        runner = self.runners[index]
        usb = runner.device.usb
        return PortInfo(
            runner.path,
            usb.vid,
            usb.pid,
            usb.serial_number,
            usb.manufacturer,
            usb.product,
            f"1-1.{index + 1}",
        )

    def lister(self) -> list[PortInfo]:
        """A drop-in for drivers.discovery.list_ports: the plugged simulated devices."""
        return [self.port_info(i) for i, r in enumerate(self.runners) if r.plugged]

    def reset_for(self, port: PortInfo) -> ResetLine | None:
        """The DTR line of the simulated device behind `port` (ptys have none of their own)."""
        runner = self.runner_for(port.hardware_id)
        return None if runner is None else runner.pulse_reset

    def runner_for(self, hardware_id: str) -> SimRunner | None:
        for i, runner in enumerate(self.runners):
            usb = runner.device.usb
            probe = PortInfo("", usb.vid, usb.pid, usb.serial_number, location=f"1-1.{i + 1}")
            if probe.hardware_id == hardware_id:
                return runner
        return None

    def attached(self) -> list[AttachedDevice]:
        """What discovery would hand the provisioner: every plugged device, with its reset line."""
        out = []
        for i, runner in enumerate(self.runners):
            if runner.plugged:
                out.append(AttachedDevice(self.port_info(i), runner.device.family, reset=runner.pulse_reset))
        return out

    async def locate(self, hardware_id: str) -> AttachedDevice | None:
        """Find a device again by hardware id, the way the agent re-finds a replugged kit."""
        return next((a for a in self.attached() if a.hardware_id == hardware_id), None)


def make_devices(count: int, *, families: Iterable[Family] = tuple(Family), seed: int = 0) -> list[SimDevice]:
    """`count` devices, families round-robin, identities derived from `seed` (deterministic)."""
    rng = random.Random(seed)
    fams = list(families)
    out: list[SimDevice] = []
    for i in range(count):
        family = fams[i % len(fams)]
        uid = rng.randbytes(6)
        if family is Family.ROBOT:
            out.append(RobotSim(uid=uid.hex(), usb_serial=f"EB{i:06d}"))
        elif family is Family.MICROPYTHON:
            out.append(MicroPythonSim(unique_id=uid, usb_serial=f"CP{i:06d}"))
        else:
            out.append(FirmataSim(usb_serial=f"75830333238351{i:06X}"))
    return out


async def run_cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=60.0, help="stop after this long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-firmata", action="store_true")
    parser.add_argument("--byte-error-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    families = tuple(Family) if args.with_firmata else (Family.ROBOT, Family.MICROPYTHON)
    bench = SimBench()
    for i, device in enumerate(make_devices(args.count, families=families, seed=args.seed)):
        plan = (
            FaultPlan(byte_error_rate=args.byte_error_rate, seed=args.seed + i)
            if args.byte_error_rate
            else None
        )
        bench.add(device, faults=plan)
    async with bench:
        for i, runner in enumerate(bench.runners):
            port = bench.port_info(i)
            print(
                json.dumps(
                    {
                        "path": port.device,
                        "vid": port.vid,
                        "pid": port.pid,
                        "serial_number": port.serial_number,
                        "family": runner.device.family.value,
                        "hardware_id": port.hardware_id,
                    }
                ),
                flush=True,
            )
        await asyncio.sleep(args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(run_cli()))
