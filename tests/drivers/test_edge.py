"""Edge supervisor against simulated kits on ptys: presence, health, commands, provisioning."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import pytest

from drivers.discovery import PortInfo, PortWatcher
from drivers.edge import CommandError, EdgeSupervisor
from drivers.provisioning import AttachedDevice, Outcome, ProvisionPlan
from drivers.types import DeviceIdentity, Family, FirmwareImage, Health, HealthStatus
from simulators.serial.bench import SimBench, make_devices
from simulators.serial.micropython import MicroPythonSim
from simulators.serial.robot import RobotSim


@dataclass
class Recorder:
    online_ids: list[tuple[str, str]] = field(default_factory=list)
    offline_ids: list[tuple[str, str]] = field(default_factory=list)
    healths: list[tuple[str, Health]] = field(default_factory=list)

    async def online(self, port: PortInfo, identity: DeviceIdentity) -> None:
        self.online_ids.append((port.hardware_id, identity.hardware_id))

    async def offline(self, hardware_id: str, reason: str) -> None:
        self.offline_ids.append((hardware_id, reason))

    async def health(self, hardware_id: str, health: Health) -> None:
        self.healths.append((hardware_id, health))


async def test_plugged_kits_come_online_report_health_and_go_offline_when_unplugged() -> None:
    rec = Recorder()
    async with SimBench() as bench:
        for device in make_devices(3, seed=11):
            bench.add(device)
        await bench.start()
        sup = EdgeSupervisor(PortWatcher(bench.lister), rec, reset_for=bench.reset_for)
        await sup.poll_once()
        assert len(rec.online_ids) == 3 and all(dev_id for _, dev_id in rec.online_ids)
        await sup.sample_once()
        assert {h.status for _, h in rec.healths} == {HealthStatus.OK} and len(rec.healths) == 3
        robot_runner = next(r for r in bench.runners if isinstance(r.device, RobotSim))
        hw = bench.port_info(bench.runners.index(robot_runner)).hardware_id
        await robot_runner.unplug()
        await sup.poll_once()
        assert rec.offline_ids == [(hw, "unplugged")]
        await robot_runner.plug()  # back, possibly on another /dev path: same identity
        await sup.poll_once()
        assert rec.online_ids[-1][0] == hw and len(sup.devices) == 3
        await sup.aclose()


async def test_reboot_command_reaches_the_simulated_kit_and_is_acknowledged() -> None:
    rec = Recorder()
    async with SimBench() as bench:
        robot = RobotSim(uid="edge01", usb_serial="EB-EDGE01")
        board = MicroPythonSim(unique_id=b"\x01\x02\x03\x04\x05\x06", usb_serial="CP-EDGE")
        bench.add(robot)
        bench.add(board)
        await bench.start()
        sup = EdgeSupervisor(PortWatcher(bench.lister), rec)
        await sup.poll_once()
        robot_hw = bench.port_info(0).hardware_id
        board_hw = bench.port_info(1).hardware_id
        assert await sup.command(robot_hw, "reboot") == {"rebooted": True}
        assert await sup.command(board_hw, "reboot") == {"rebooted": True}
        config = await sup.command(robot_hw, "apply_config", {"config": {"school": "S-9"}})
        health = await sup.command(board_hw, "health")
        with pytest.raises(CommandError):
            await sup.command(robot_hw, "self_destruct")
        with pytest.raises(CommandError):
            await sup.command("usb-dead-beef-none", "reboot")
        await sup.aclose()
    assert robot.boots == 1 and board.soft_resets == 1
    assert config["ok"] and robot.config == {"school": "S-9"}
    assert health["status"] == "ok"


async def test_provision_through_supervisor_releases_and_reconnects_kits() -> None:
    rec = Recorder()
    image = FirmwareImage.from_bytes("2.0.0", bytes(range(256)) * 8)
    async with SimBench() as bench:
        for device in make_devices(2, families=(Family.ROBOT,), seed=12):
            bench.add(device)
        await bench.start()
        sup = EdgeSupervisor(PortWatcher(bench.lister), rec)
        await sup.poll_once()

        def plan(dev: AttachedDevice, ident: DeviceIdentity) -> ProvisionPlan:
            return ProvisionPlan({"school": "S-1"}, image)

        results = await sup.provision(plan)
        versions = {h.identity.firmware_version for h in sup.devices.values()}
        await sup.aclose()
    assert [r.outcome for r in results] == [Outcome.PROVISIONED] * 2
    assert versions == {"2.0.0"} and len(rec.online_ids) == 4


async def test_run_loop_notices_a_hot_plug_without_manual_polls() -> None:
    rec = Recorder()
    async with SimBench() as bench:
        runner = bench.add(RobotSim(uid="hot01", usb_serial="EB-HOT01"))
        sup = EdgeSupervisor(PortWatcher(bench.lister, interval=0.05), rec, health_interval=0.05)
        task = asyncio.create_task(sup.run(), name="edge-under-test")
        try:
            await runner.plug()
            for _ in range(400):  # bounded wait for the state change, not a timing assertion
                if rec.online_ids and rec.healths:
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await sup.aclose()
    assert rec.online_ids == [("usb-1209-000a-EB-HOT01", "robot-hot01")]
    assert rec.healths and rec.healths[0][1].status == HealthStatus.OK
