"""Robot driver against the robot simulator, over real ptys and memory links, with faults."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from drivers.codecs.robot import MsgType
from drivers.errors import LinkClosed
from drivers.links import MemoryHub, MemoryLink
from drivers.robot import RobotDevice
from drivers.types import FirmwareImage, HealthStatus, Progress
from simulators.serial.faults import FaultPlan
from simulators.serial.pty import SimRunner
from simulators.serial.robot import RobotFaults, RobotSim

IMAGE = FirmwareImage.from_bytes("2.0.0", random.Random(1).randbytes(12_000))


@pytest.fixture
async def runner() -> AsyncIterator[SimRunner]:
    run = SimRunner(RobotSim(uid="e1b0c0de0001"), name="robot-sim")
    await run.plug()
    yield run
    await run.aclose()


async def open_robot(run: SimRunner, **kwargs: object) -> RobotDevice:
    return await RobotDevice.open(run.url, rng=random.Random(5), **kwargs)


async def test_identify_over_pty_reports_hardware_id_version_and_slot(runner: SimRunner) -> None:
    async with await open_robot(runner) as dev:
        ident = await dev.identify()
    assert ident.hardware_id == "robot-e1b0c0de0001"
    assert ident.firmware_version == "1.0.0"
    assert ident.detail("active_slot") == "A"
    assert ident.detail("boot_status") == "ok"


async def test_health_over_pty_flags_low_battery_and_stalled_motor(runner: SimRunner) -> None:
    sim = runner.device
    assert isinstance(sim, RobotSim)
    async with await open_robot(runner) as dev:
        healthy = await dev.read_health()
        sim.battery_pct = 12
        low = await dev.read_health()
        sim.motors[1] = (1, 900)
        stalled = await dev.read_health()
    assert healthy.status == HealthStatus.OK and healthy.reading("battery_mv") == 7400
    assert low.status == HealthStatus.DEGRADED and "battery low" in low.problems
    assert stalled.status == HealthStatus.FAULT and "motor 1 stalled" in stalled.problems


async def test_configure_over_pty_stores_config_on_robot(runner: SimRunner) -> None:
    async with await open_robot(runner) as dev:
        result = await dev.apply_config({"school": "S-017", "room": "lab-2", "mqtt_host": "10.0.0.5"})
        stored = await dev.read_config()
    assert result.ok and result.keys == ("mqtt_host", "room", "school")
    assert stored == {"school": "S-017", "room": "lab-2", "mqtt_host": "10.0.0.5"}


async def test_flash_over_pty_switches_slot_and_confirms(runner: SimRunner) -> None:
    sim = runner.device
    assert isinstance(sim, RobotSim)
    seen: list[Progress] = []
    async with await open_robot(runner) as dev:
        result = await dev.flash(IMAGE, seen.append)
        ident = await dev.identify()
    assert result.ok and (result.before, result.after) == ("1.0.0", "2.0.0")
    assert ident.detail("active_slot") == "B" and ident.detail("boot_status") == "ok"
    assert sim.slots[1].data == IMAGE.data
    assert seen[-1] == Progress("boot", 1, 1)
    assert any(p.phase == "flash" and p.done == len(IMAGE.data) for p in seen)


async def test_flash_to_same_version_is_a_no_op(runner: SimRunner) -> None:
    async with await open_robot(runner) as dev:
        await dev.flash(IMAGE)
        again = await dev.flash(IMAGE)
    assert again.ok and again.reason == "already at target version" and again.bytes_sent == 0


async def test_reboot_over_pty_comes_back_on_same_slot(runner: SimRunner) -> None:
    sim = runner.device
    assert isinstance(sim, RobotSim)
    async with await open_robot(runner) as dev:
        await dev.reboot()
        ident = await dev.identify()
    assert sim.boots == 1 and ident.firmware_version == "1.0.0"


async def test_driver_works_over_memory_link() -> None:
    hub = MemoryHub()
    sim = RobotSim(uid="mem1")
    incoming = hub.listen("robot1")
    dev = await RobotDevice.open("memory://robot1", memory_hub=hub, rng=random.Random(1))
    serve = asyncio.create_task(_serve_next(sim, incoming), name="sim")
    try:
        assert (await dev.identify()).hardware_id == "robot-mem1"
        assert (await dev.flash(IMAGE)).ok
    finally:
        await dev.aclose()
        serve.cancel()


async def _serve_next(sim: RobotSim, incoming: asyncio.Queue[MemoryLink]) -> None:
    link = await incoming.get()
    try:
        await sim.serve(link)
    except LinkClosed:
        pass


# ---- faults ---------------------------------------------------------------------------------


async def test_unplug_mid_flash_then_replug_resumes_from_last_good_chunk() -> None:
    sim = RobotSim(uid="unplug01")
    run = SimRunner(sim, faults=FaultPlan(unplug_after_rx_bytes=6_000), name="unplug")
    await run.plug()
    try:
        dev = await open_robot(run)
        with pytest.raises(LinkClosed):
            await dev.flash(IMAGE)
        await dev.aclose()
        good = len(sim.upd_buf)
        assert 0 < good < len(IMAGE.data)
        chunks_before = len(sim.chunk_offsets)

        await run.plug()  # replug: a fresh pty, as a real replug may give a new /dev path
        dev = await open_robot(run)
        result = await dev.flash(IMAGE)
        await dev.aclose()
    finally:
        await run.aclose()
    assert result.ok and result.after == "2.0.0"
    assert result.resumed_from == good
    assert sim.chunk_offsets[chunks_before] == good  # first chunk after replug is the next one
    assert result.bytes_sent == len(IMAGE.data) - good
    assert sim.slots[sim.active].data == IMAGE.data


async def test_corrupt_flash_leaves_robot_on_old_slot_and_reports_failure(runner: SimRunner) -> None:
    sim = runner.device
    assert isinstance(sim, RobotSim)
    sim.faults = RobotFaults(corrupt_flash=True)
    async with await open_robot(runner) as dev:
        result = await dev.flash(IMAGE)
        ident = await dev.identify()
    assert not result.ok and "HASH_MISMATCH" in result.reason
    assert result.after == "1.0.0"
    assert ident.firmware_version == "1.0.0" and ident.detail("active_slot") == "A"


async def test_corrupt_image_file_is_refused_before_sending(runner: SimRunner) -> None:
    sim = runner.device
    assert isinstance(sim, RobotSim)
    tampered = FirmwareImage("2.0.0", IMAGE.data[:-1] + b"\x00", IMAGE.sha256)
    async with await open_robot(runner) as dev:
        result = await dev.flash(tampered)
    assert not result.ok and "sha256" in result.reason
    assert not any(f.type == MsgType.FW_BEGIN for f in sim.executed)


async def test_failed_boot_rolls_back_to_old_slot_and_reports_failure(runner: SimRunner) -> None:
    sim = runner.device
    assert isinstance(sim, RobotSim)
    sim.faults = RobotFaults(fail_boot=True)
    async with await open_robot(runner) as dev:
        result = await dev.flash(IMAGE)
        ident = await dev.identify()
    assert not result.ok and "failed to boot" in result.reason
    assert (result.before, result.after) == ("1.0.0", "1.0.0")
    assert ident.detail("active_slot") == "A" and ident.detail("boot_status") == "rolled_back"


async def test_unconfirmed_trial_image_rolls_back_on_next_reboot(runner: SimRunner) -> None:
    sim = runner.device
    assert isinstance(sim, RobotSim)
    async with await open_robot(runner) as dev:
        await dev.flash(IMAGE)
        # Simulate a host that died between trial boot and confirm: put the robot back in trial.
        sim.upd_state = sim.upd_state.__class__.TRIAL
        sim.previous_active = 0
        await dev.reboot()
        ident = await dev.identify()
    assert ident.firmware_version == "1.0.0" and ident.detail("boot_status") == "rolled_back"


async def test_one_percent_byte_errors_never_execute_a_wrong_command_and_flash_completes() -> None:
    sim = RobotSim(uid="noisy01")
    plan = FaultPlan(byte_error_rate=0.01, seed=1234)
    run = SimRunner(sim, faults=plan, name="noisy")
    await run.plug()
    journal: list = []
    image = FirmwareImage.from_bytes("3.1.0", random.Random(2).randbytes(6_000))
    try:
        dev = await RobotDevice.open(run.url, rng=random.Random(9), journal=journal, ack_timeout=0.1)
        assert (await dev.apply_config({"school": "S-1", "room": "R-9"})).ok
        result = await dev.flash(image)
        stats = dev.session.counters()
        await dev.aclose()
    finally:
        await run.aclose()
    assert result.ok and result.after == "3.1.0"
    assert sim.slots[sim.active].data == image.data
    assert sim.config == {"school": "S-1", "room": "R-9"}
    sent = {(f.type, f.seq, f.body) for f in journal}
    executed = [(f.type, f.seq, f.body) for f in sim.executed]
    assert set(executed) <= sent  # every command the robot ran is one the host sent, byte for byte
    non_hello = [e for e in executed if e[0] != MsgType.HELLO]
    assert len(non_hello) == len(set(non_hello))  # and none ran twice
    assert stats.retransmits > 0 and sum(stats.rejected.values()) > 0  # the noise was real


async def test_slow_device_still_completes() -> None:
    sim = RobotSim(uid="slow01")
    run = SimRunner(sim, faults=FaultPlan(delay=0.002), name="slow")
    await run.plug()
    try:
        async with await open_robot(run) as dev:
            result = await dev.flash(FirmwareImage.from_bytes("2.1.0", bytes(3000)))
    finally:
        await run.aclose()
    assert result.ok


async def test_dropped_bytes_on_the_line_still_complete_the_flash() -> None:
    sim = RobotSim(uid="drop01")
    run = SimRunner(sim, faults=FaultPlan(drop_rate=0.005, seed=77), name="drops")
    await run.plug()
    try:
        async with await RobotDevice.open(run.url, rng=random.Random(3), ack_timeout=0.1) as dev:
            result = await dev.flash(FirmwareImage.from_bytes("2.2.0", random.Random(4).randbytes(4_000)))
    finally:
        await run.aclose()
    assert result.ok and sim.slots[sim.active].version == "2.2.0"


async def test_driver_works_over_a_socket_link() -> None:
    sim = RobotSim(uid="tcp01")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from drivers.links import StreamLink

        try:
            await sim.serve(StreamLink(reader, writer, "socket://device"))
        except LinkClosed:
            pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with await RobotDevice.open(f"socket://127.0.0.1:{port}", rng=random.Random(1)) as dev:
            ident = await dev.identify()
    finally:
        server.close()
        await server.wait_closed()
    assert ident.hardware_id == "robot-tcp01"


async def test_keepalive_marks_a_silent_device_dead() -> None:
    from drivers.session import ArqSession

    host, device = MemoryLink.pair("silent")
    session = ArqSession(host, keepalive_interval=0.01, ack_timeout=0.01, rng=random.Random(2))
    await session.start()
    try:
        for _ in range(500):  # bounded wait for the state change, not a timing assertion
            if not session.alive:
                break
            await asyncio.sleep(0.01)
    finally:
        await session.aclose()
        await device.aclose()
    assert not session.alive and session.sent >= 4
