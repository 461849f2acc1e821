"""The robot protocol's safety rules (docs/protocol-serial-robot.md), host and simulated robot."""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import AsyncIterator

import pytest

from drivers.codecs.robot import BodyReader, MsgType, RobotFrame, Status, pack_str8
from drivers.errors import DeviceTimeout, ProtocolError
from drivers.robot import RobotDevice
from drivers.types import FirmwareImage
from simulators.serial.pty import SimRunner
from simulators.serial.robot import RobotSim, UpdateState

NEW = FirmwareImage.from_bytes("2.0.0", random.Random(3).randbytes(3_000))
NEWER = FirmwareImage.from_bytes("3.0.0", random.Random(4).randbytes(2_000))
KNOWN_GOOD = random.Random(5).randbytes(1_500)


@pytest.fixture
async def runner() -> AsyncIterator[SimRunner]:
    sim = RobotSim(uid="5afe0001")
    sim.slots[0].data = KNOWN_GOOD
    run = SimRunner(sim, name="robot-safety")
    await run.plug()
    yield run
    await run.aclose()


def sim_of(run: SimRunner) -> RobotSim:
    assert isinstance(run.device, RobotSim)
    return run.device


async def open_robot(run: SimRunner, **kwargs: object) -> RobotDevice:
    return await RobotDevice.open(run.url, rng=random.Random(7), **kwargs)


def begin_body(image: FirmwareImage) -> bytes:
    return len(image.data).to_bytes(4, "big") + bytes.fromhex(image.sha256) + pack_str8(image.version)


async def leave_in_trial(dev: RobotDevice, image: FirmwareImage) -> None:
    """Everything a host does up to the trial boot, then it 'dies' before FW_CONFIRM."""
    await dev.identify()
    await dev.session.request(MsgType.FW_BEGIN, begin_body(image))
    for offset in range(0, len(image.data), 400):
        data = image.data[offset : offset + 400]
        body = offset.to_bytes(4, "big") + zlib.crc32(data).to_bytes(4, "big") + data
        await dev.session.request(MsgType.FW_CHUNK, body)
    assert (await dev.session.request(MsgType.FW_COMMIT)).body == bytes([Status.OK])
    assert (await dev.session.request(MsgType.REBOOT, b"\x01")).body == bytes([Status.OK])
    ident = await wait_for_hello(dev)
    assert (ident.firmware_version, ident.detail("boot_status")) == (image.version, "trial")


async def wait_for_hello(dev: RobotDevice) -> object:
    for _ in range(200):
        try:
            return await dev.identify(attempts=1)
        except DeviceTimeout:
            await asyncio.sleep(0.01)
    raise AssertionError("robot never answered HELLO after its reboot")


def status_of(frame: RobotFrame) -> Status:
    return Status(BodyReader(frame.body).u8())


async def test_fw_begin_during_trial_is_refused_and_the_rollback_image_survives(runner: SimRunner) -> None:
    sim = sim_of(runner)
    async with await open_robot(runner) as dev:
        await leave_in_trial(dev, NEW)
        refused = await dev.session.request(MsgType.FW_BEGIN, begin_body(NEWER))
        assert status_of(refused) is Status.BAD_STATE
        assert (sim.slots[0].version, sim.slots[0].data) == ("1.0.0", KNOWN_GOOD)
        # The unconfirmed image must not become permanent: a reboot goes back to the known-good slot.
        await dev.reboot()
        ident = await dev.identify()
    assert (ident.firmware_version, ident.detail("active_slot")) == ("1.0.0", "A")
    assert ident.detail("boot_status") == "rolled_back"
    assert sim.slots[0].data == KNOWN_GOOD


async def test_host_rolls_back_an_abandoned_trial_before_sending_another_image(runner: SimRunner) -> None:
    sim = sim_of(runner)
    async with await open_robot(runner) as dev:
        await leave_in_trial(dev, NEW)
        result = await dev.flash(NEWER)
        ident = await dev.identify()
    assert result.ok, result.reason
    assert (result.before, result.after) == ("1.0.0", "3.0.0")
    assert (ident.firmware_version, ident.detail("boot_status")) == ("3.0.0", "ok")
    assert ident.detail("active_slot") == "B" and sim.slots[0].data == KNOWN_GOOD


async def test_host_confirms_the_target_it_finds_in_trial(runner: SimRunner) -> None:
    sim = sim_of(runner)
    async with await open_robot(runner) as dev:
        await leave_in_trial(dev, NEW)
        sent_before = len(sim.chunk_offsets)
        result = await dev.flash(NEW)
        ident = await dev.identify()
    assert result.ok and result.after == "2.0.0" and len(sim.chunk_offsets) == sent_before
    assert ident.detail("boot_status") == "ok" and sim.upd_state is UpdateState.IDLE


async def test_trial_reboot_of_nothing_verified_is_refused_without_rebooting(runner: SimRunner) -> None:
    sim = sim_of(runner)
    async with await open_robot(runner) as dev:
        await dev.identify()
        refused = await dev.session.request(MsgType.REBOOT, b"\x01")
        unknown_mode = await dev.session.request(MsgType.REBOOT, b"\x07")
    assert status_of(refused) is Status.BAD_STATE and status_of(unknown_mode) is Status.BAD_REQUEST
    assert sim.boots == 0


async def test_a_busy_robot_is_asked_again_until_its_erase_and_hash_finish(runner: SimRunner) -> None:
    sim = sim_of(runner)
    sim.erase_time = sim.hash_time = 0.3
    async with await open_robot(runner) as dev:
        result = await dev.flash(NEW)
    assert result.ok, result.reason
    assert sim.busy_answers >= 2 and dev.busy_waits == sim.busy_answers
    assert sim.slots[1].data == NEW.data


async def test_a_robot_busy_forever_fails_the_request_after_the_busy_budget(runner: SimRunner) -> None:
    sim = sim_of(runner)
    sim.erase_time = 3600.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with await open_robot(runner, busy_budget=0.5) as dev:
        with pytest.raises(DeviceTimeout, match="FW_BEGIN still BUSY after 0.5 s"):
            await dev.flash(NEW)
        # HELLO and PING still answer while the robot is busy: the host sees it alive.
        assert (await dev.identify()).firmware_version == "1.0.0"
    assert loop.time() - started < 5.0
    assert sim.slots[0].data == KNOWN_GOOD


async def test_hello_negotiates_protocol_one_and_a_host_without_an_offer_gets_one(runner: SimRunner) -> None:
    async with await open_robot(runner) as dev:
        bare = await dev.session.request(MsgType.HELLO, (42).to_bytes(4, "big"))
        offered_five = await dev.session.request(MsgType.HELLO, (43).to_bytes(4, "big") + b"\x05")
        offered_zero = await dev.session.request(MsgType.HELLO, (44).to_bytes(4, "big") + b"\x00")
    assert bare.body[:2] == bytes([Status.OK, 1]) and offered_five.body[:2] == bytes([Status.OK, 1])
    assert status_of(offered_zero) is Status.BAD_REQUEST


class _FutureRobot(RobotSim):
    """A robot that ignores the offer and answers a protocol the host never offered."""

    def _execute(self, frame: RobotFrame) -> bytes:
        body = super()._execute(frame)
        if frame.type == MsgType.HELLO:
            return body[:1] + b"\x02" + body[2:]
        return body


async def test_a_robot_answering_an_unoffered_protocol_is_a_protocol_error() -> None:
    run = SimRunner(_FutureRobot(uid="f0000002"), name="robot-future")
    await run.plug()
    try:
        async with await open_robot(run) as dev:
            with pytest.raises(ProtocolError, match="protocol 2"):
                await dev.identify()
    finally:
        await run.aclose()


async def test_a_unique_id_that_cannot_be_an_mqtt_username_is_refused() -> None:
    run = SimRunner(RobotSim(uid="lab/robot:7"), name="robot-bad-uid")
    await run.plug()
    try:
        async with await open_robot(run) as dev:
            with pytest.raises(ProtocolError, match="unique_id 'lab/robot:7'"):
                await dev.identify()
    finally:
        await run.aclose()


async def test_a_configuration_that_is_not_canonical_is_refused_and_nothing_stored(runner: SimRunner) -> None:
    sim = sim_of(runner)
    unsorted = b"\x02" + pack_str8("room") + b"\x00\x01a" + pack_str8("mqtt_host") + b"\x00\x01b"
    async with await open_robot(runner) as dev:
        await dev.identify()
        answer = await dev.session.request(MsgType.SET_CONFIG, unsorted)
    assert status_of(answer) is Status.BAD_REQUEST and sim.config == {}
