"""Provisioning core against a bench of simulated kits on real ptys."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from drivers.provisioning import (
    AttachedDevice,
    DeviceProgress,
    Outcome,
    Provisioner,
    ProvisionPlan,
    StateFile,
)
from drivers.types import DeviceIdentity, Family, FirmwareImage
from simulators.serial.bench import SimBench, make_devices
from simulators.serial.faults import FaultPlan
from simulators.serial.firmata import sketch_image
from simulators.serial.robot import RobotFaults, RobotSim

ROBOT_FW = FirmwareImage.from_bytes("2.0.0", random.Random(3).randbytes(8_000))
MPY_APP = FirmwareImage.bundle("1.1.0", {"main.py": b"print('kit ready')\n" * 30})
FIRMATA_FW = FirmwareImage.from_bytes("2.6", sketch_image("StandardFirmata.ino", 2, 6, size=4_000))
TARGET = {Family.ROBOT: ROBOT_FW, Family.MICROPYTHON: MPY_APP, Family.FIRMATA: FIRMATA_FW}


def plan_for(dev: AttachedDevice, ident: DeviceIdentity) -> ProvisionPlan:
    config = {"school": "S-042", "room": "ai-lab-1"}
    if dev.family is Family.FIRMATA:
        config = {"pin.13": "output", "sampling_interval_ms": "100"}
    return ProvisionPlan(config, TARGET[dev.family])


async def test_bench_of_mixed_kits_is_provisioned_in_parallel_with_progress() -> None:
    events: list[DeviceProgress] = []
    async with SimBench() as bench:
        for device in make_devices(6, seed=1):
            bench.add(device)
        await bench.start()
        results = await Provisioner(progress=events.append).run(bench.attached(), plan_for)
    assert [r.outcome for r in results] == [Outcome.PROVISIONED] * 6
    assert {(r.family, r.firmware_before, r.firmware_after) for r in results} == {
        (Family.MICROPYTHON, "none", "1.1.0"),
        (Family.FIRMATA, "2.5.0", "2.6"),
        (Family.ROBOT, "1.0.0", "2.0.0"),
    }
    assert all(r.device_id for r in results)
    done = {e.hardware_id for e in events if e.step == "done"}
    assert done == {r.hardware_id for r in results}
    assert any(e.step == "flash" and e.total > 0 for e in events)


async def test_state_file_makes_a_second_run_skip_finished_devices(tmp_path: Path) -> None:
    state_path = tmp_path / "bench-state.json"
    async with SimBench() as bench:
        for device in make_devices(3, seed=2):
            bench.add(device)
        await bench.start()
        first = await Provisioner(state=StateFile(state_path)).run(bench.attached(), plan_for)
        second = await Provisioner(state=await StateFile.load(state_path)).run(bench.attached(), plan_for)
    assert all(r.outcome is Outcome.PROVISIONED for r in first + second)
    assert all(r.reason == "already provisioned (resumed run)" for r in second)


async def test_interrupted_run_resumes_from_state_and_device_resumes_its_transfer(tmp_path: Path) -> None:
    state_path = tmp_path / "bench-state.json"
    async with SimBench() as bench:
        for device in make_devices(2, families=(Family.MICROPYTHON,), seed=3):
            bench.add(device)
        robot = RobotSim(uid="cafe01", usb_serial="EB-CAFE01")
        runner = bench.add(robot, faults=FaultPlan(unplug_after_rx_bytes=5_000))
        await bench.start()
        first = await Provisioner(state=StateFile(state_path), attempts=1).run(bench.attached(), plan_for)
        assert [r.outcome for r in first] == [Outcome.PROVISIONED, Outcome.PROVISIONED, Outcome.FAILED]
        assert "LinkClosed" in first[2].reason
        offsets_before = len(robot.chunk_offsets)
        good = len(robot.upd_buf)
        await runner.plug()  # the technician plugs the robot back in and reruns the bench
        second = await Provisioner(state=StateFile(state_path), attempts=1).run(bench.attached(), plan_for)
    assert [r.outcome for r in second] == [Outcome.PROVISIONED] * 3
    assert [r.reason for r in second[:2]] == ["already provisioned (resumed run)"] * 2
    assert robot.chunk_offsets[offsets_before] == good  # the robot continued from its last good chunk
    assert second[2].resumed_from == good
    assert robot.slots[robot.active].data == ROBOT_FW.data


async def test_cable_pulled_mid_flash_is_retried_on_the_new_port_after_replug() -> None:
    async with SimBench() as bench:
        robot = RobotSim(uid="beef02", usb_serial="EB-BEEF02")
        runner = bench.add(robot, faults=FaultPlan(unplug_after_rx_bytes=4_000))
        await bench.start()

        async def technician() -> None:
            while runner.plugged:
                await asyncio.sleep(0.01)
            await runner.plug()

        helper = asyncio.create_task(technician(), name="replug")
        results = await Provisioner(locate=bench.locate).run(bench.attached(), plan_for)
        await helper
    assert results[0].outcome is Outcome.PROVISIONED and results[0].attempts == 2
    assert results[0].resumed_from > 0
    assert results[0].firmware_after == "2.0.0"


async def test_failed_boot_is_a_failure_result_and_other_devices_still_finish() -> None:
    async with SimBench() as bench:
        bad = RobotSim(uid="dead03", usb_serial="EB-DEAD03", faults=RobotFaults(fail_boot=True))
        bench.add(bad)
        for device in make_devices(2, families=(Family.ROBOT,), seed=4):
            bench.add(device)
        await bench.start()
        results = await Provisioner().run(bench.attached(), plan_for)
    assert results[0].outcome is Outcome.FAILED and "failed to boot" in results[0].reason
    assert results[0].firmware_after == "1.0.0" and bad.active == 0
    assert [r.outcome for r in results[1:]] == [Outcome.PROVISIONED] * 2


async def test_device_without_plan_is_skipped() -> None:
    async with SimBench() as bench:
        bench.add(make_devices(1, families=(Family.ROBOT,))[0])
        await bench.start()
        results = await Provisioner().run(bench.attached(), lambda d, i: None)
    assert results[0].outcome is Outcome.SKIPPED


def test_unreadable_state_file_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    state = StateFile(path)
    assert state.entries == {} and (tmp_path / "state.json.bad").exists()
