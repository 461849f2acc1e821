"""Provisioning bench: 30 simulated kits on real ptys provisioned at once, against the slowest single kit.

Baseline (same process): one kit of each family provisioned alone; the slowest of them is the
best a parallel bench could do. The ratio wall(30 at once) / slowest single shows how well the
bench overlaps devices (1.0 is perfect overlap). The simulated kits shift bytes at a real UART's
pace (--baud, 115200 by default, the rate all three families use); --baud 0 runs at pty speed,
which makes the bench CPU-bound and shows the per-device Python cost instead.
Ends with one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time

from drivers.codecs import ihex
from drivers.provisioning import AttachedDevice, Outcome, Provisioner, ProvisionPlan, ProvisionResult
from drivers.types import DeviceIdentity, Family, FirmwareImage
from simulators.serial.bench import SimBench, make_devices
from simulators.serial.faults import FaultPlan

ROBOT_IMAGE_BYTES = 32 * 1024  # a small robot app image; real ones are 100-400 KiB
MPY_APP_BYTES = 6 * 1024  # two files of a lesson app bundle
FIRMATA_SKETCH_BYTES = 12 * 1024  # StandardFirmata compiles to ~12 KiB on an Uno


def targets(seed: int) -> dict[Family, FirmwareImage]:
    rng = random.Random(seed)
    return {
        Family.ROBOT: FirmwareImage.from_bytes("2.0.0", rng.randbytes(ROBOT_IMAGE_BYTES)),
        Family.MICROPYTHON: FirmwareImage.bundle(
            "1.1.0",
            {
                "main.py": b"import lesson\nlesson.run()\n",
                "lib/lesson.py": bytes(rng.randrange(32, 127) for _ in range(MPY_APP_BYTES)),
            },
        ),
        # Intel HEX, as the district's profile ships it (firmware_profiles/kit-uno-firmata.yaml); a body
        # unlike the installed sketch's, so every page is written (a real new build differs throughout).
        Family.FIRMATA: FirmwareImage.from_bytes(
            "2.6.0",
            ihex.encode_ihex(rng.randbytes(FIRMATA_SKETCH_BYTES) + b"LFFW/StandardFirmata-2.6.0.ino/2.6\x00"),
        ),
    }


def planner(images: dict[Family, FirmwareImage]):
    def plan_for(dev: AttachedDevice, ident: DeviceIdentity) -> ProvisionPlan:
        if dev.family is Family.FIRMATA:
            return ProvisionPlan({"pin.13": "output", "sampling_interval_ms": "100"}, images[dev.family])
        return ProvisionPlan(
            {"school": "S-042", "room": "ai-lab-1", "mqtt_host": "edge.local"}, images[dev.family]
        )

    return plan_for


async def provision(
    count: int,
    families: tuple[Family, ...],
    seed: int,
    error_rate: float,
    baud: int,
    images: dict[Family, FirmwareImage],
) -> tuple[float, list[ProvisionResult]]:
    async with SimBench() as bench:
        for i, device in enumerate(make_devices(count, families=families, seed=seed)):
            bench.add(device, faults=FaultPlan(byte_error_rate=error_rate, baud=baud or None, seed=seed + i))
        await bench.start()
        start = time.perf_counter()
        results = await Provisioner(locate=bench.locate).run(bench.attached(), planner(images))
        return time.perf_counter() - start, results


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--byte-error-rate", type=float, default=0.0, help="line noise on every kit's line")
    parser.add_argument("--baud", type=int, default=115200)
    args = parser.parse_args(argv)
    images = targets(args.seed)

    singles: dict[str, float] = {}
    for family in Family:
        seconds, results = await provision(
            1, (family,), args.seed + 100, args.byte_error_rate, args.baud, images
        )
        assert results[0].outcome is Outcome.PROVISIONED, results[0]
        singles[family.value] = seconds
    slowest = max(singles.values())

    wall, results = await provision(
        args.count, tuple(Family), args.seed, args.byte_error_rate, args.baud, images
    )
    ok = sum(r.outcome is Outcome.PROVISIONED for r in results)
    per_device = [r.seconds for r in results]
    print("single device alone: " + ", ".join(f"{k} {v:.2f} s" for k, v in singles.items()))
    print(
        f"{args.count} devices at once: {wall:.2f} s wall, {ok}/{args.count} provisioned, "
        f"per-device median {statistics.median(per_device):.2f} s, max {max(per_device):.2f} s"
    )
    print(
        f"throughput {args.count / wall * 60:.0f} devices/min; wall / slowest single = {wall / slowest:.2f}"
    )
    for r in results:
        if r.outcome is not Outcome.PROVISIONED:
            print(f"  FAILED {r.hardware_id}: {r.reason}")
    print(
        json.dumps(
            {
                "benchmark": "provision",
                "devices": args.count,
                "provisioned": ok,
                "byte_error_rate": args.byte_error_rate,
                "baud": args.baud,
                "wall_s": round(wall, 3),
                "devices_per_min": round(args.count / wall * 60, 1),
                "slowest_single_s": round(slowest, 3),
                "single_s": {k: round(v, 3) for k, v in singles.items()},
                "ratio_wall_to_slowest_single": round(wall / slowest, 2),
                "per_device_max_s": round(max(per_device), 3),
            }
        )
    )
    return 0 if ok == args.count else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
