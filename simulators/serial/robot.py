"""A simulated educational robot speaking the LabFleet robot protocol, with A/B firmware slots."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from drivers.codecs.robot import (
    PROTOCOL_MAX,
    BodyReader,
    MsgType,
    RobotDecoder,
    RobotFrame,
    Status,
    decode_config,
    encode_config,
    encode_frame,
    pack_str8,
)
from drivers.errors import FrameError
from drivers.links import Link
from drivers.types import Family
from simulators.serial.base import SimDevice, UsbIdentity

log = logging.getLogger(__name__)

# pid.codes test VID/PID: a vendor replaces it with its own allocation (see the protocol doc).
ROBOT_VID, ROBOT_PID = 0x1209, 0x000A
# How many answered requests the robot remembers to replay instead of re-executing a retransmission.
DUP_CACHE = 16
# Largest chunk the simulated flash writer accepts in one FW_CHUNK.
SIM_MAX_CHUNK = 448
# The robot ignores input for this long after a reboot, like a real bootloader checking a slot.
BOOT_TIME = 0.05
# Largest image a slot holds.
SLOT_SIZE = 1 << 20
# What the robot tells a host to wait before asking again while it is busy (docs: BUSY).
BUSY_RETRY_MS = 100


class UpdateState(Enum):
    IDLE = "idle"
    RECEIVING = "receiving"
    VERIFIED = "verified"
    TRIAL = "trial"


@dataclass
class RobotFaults:
    corrupt_flash: bool = False  # flash writes flip a bit: the image hash check must catch it
    fail_boot: bool = False  # the new image crashes at boot: the bootloader must roll back


@dataclass
class Slot:
    version: str
    data: bytes = b""


@dataclass
class RobotSim(SimDevice):
    uid: str
    model: str = "edubot-2"
    usb_serial: str | None = None
    slots: list[Slot] = field(default_factory=lambda: [Slot("1.0.0"), Slot("")])
    active: int = 0
    boot_status: int = 0  # 0 ok, 1 trial, 2 rolled back
    config: dict[str, str] = field(default_factory=dict)
    battery_mv: int = 7400
    battery_pct: int = 87
    temperature_c: int = 31
    motors: list[tuple[int, int]] = field(default_factory=lambda: [(0, 120), (0, 118)])
    faults: RobotFaults = field(default_factory=RobotFaults)
    boot_time: float = BOOT_TIME
    # Seconds an erase of the inactive slot and a SHA-256 of the image take; while either runs the robot
    # answers BUSY (a real one erasing 1 MiB of SPI flash takes seconds). 0: instant, no BUSY.
    erase_time: float = 0.0
    hash_time: float = 0.0
    clock: Callable[[], float] = time.monotonic
    # update state, kept across unplug (it lives in the robot's flash)
    upd_state: UpdateState = UpdateState.IDLE
    upd_size: int = 0
    upd_sha: bytes = b""
    upd_version: str = ""
    upd_buf: bytearray = field(default_factory=bytearray)
    previous_active: int = 0
    # observation points for tests
    executed: list[RobotFrame] = field(default_factory=list)
    chunk_offsets: list[int] = field(default_factory=list)
    boots: int = 0
    busy_answers: int = 0
    family = Family.ROBOT

    def __post_init__(self) -> None:
        self.usb = UsbIdentity(
            ROBOT_VID, ROBOT_PID, self.usb_serial or self.uid.upper(), "LabFleet", "EduBot serial"
        )
        self._cache: OrderedDict[int, tuple[bytes, bytes]] = OrderedDict()
        self._boot_until = 0.0
        self._busy_until = 0.0
        self._hashing = False
        self.decoder = RobotDecoder()

    @property
    def version(self) -> str:
        return self.slots[self.active].version

    async def serve(self, link: Link) -> None:
        decoder = RobotDecoder()
        self.decoder = decoder
        loop = asyncio.get_running_loop()
        while True:
            data = await link.read()
            if loop.time() < self._boot_until:
                continue  # still booting: the UART is not listening yet
            before = decoder.rejected_total
            frames = decoder.feed(data)
            if decoder.rejected_total > before:
                await link.write(encode_frame(RobotFrame(MsgType.NAK, 0, b"\x01")))
            for frame in frames:
                reply = self._dispatch(frame)
                if reply is not None:
                    await link.write(encode_frame(reply))
                    if frame.type == MsgType.REBOOT and reply.body[:1] == bytes([Status.OK]):
                        self._boot_until = loop.time() + self.boot_time

    def _dispatch(self, frame: RobotFrame) -> RobotFrame | None:
        if frame.is_response or frame.type == MsgType.NAK:
            return None
        key = hashlib.sha256(bytes([frame.type]) + frame.body).digest()
        cached = self._cache.get(frame.seq)
        if frame.type != MsgType.HELLO and cached is not None and cached[0] == key:
            return RobotFrame(frame.type | 0x80, frame.seq, cached[1])  # replay, do not execute again
        if frame.type not in (MsgType.HELLO, MsgType.PING) and self.clock() < self._busy_until:
            # Still erasing or hashing: answer at once, remember nothing (the host asks again).
            self.busy_answers += 1
            return RobotFrame(frame.type | 0x80, frame.seq, _busy())
        try:
            body = self._execute(frame)
        except FrameError:
            body = bytes([Status.BAD_REQUEST])
        if body[:1] == bytes([Status.BUSY]):
            self.busy_answers += 1
            return RobotFrame(frame.type | 0x80, frame.seq, body)
        self.executed.append(frame)
        if frame.type == MsgType.HELLO:
            self._cache.clear()
        self._cache[frame.seq] = (key, body)
        while len(self._cache) > DUP_CACHE:
            self._cache.popitem(last=False)
        return RobotFrame(frame.type | 0x80, frame.seq, body)

    def _execute(self, frame: RobotFrame) -> bytes:
        ok = bytes([Status.OK])
        r = BodyReader(frame.body)
        t = frame.type
        if t == MsgType.HELLO:
            r.u32()
            # A host that predates negotiation sends no offer: it speaks protocol 1.
            offered = r.u8() if not r.done() else 1
            if offered < 1:
                return bytes([Status.BAD_REQUEST])
            return (
                ok
                + bytes([min(offered, PROTOCOL_MAX)])
                + pack_str8(self.uid)
                + pack_str8(self.model)
                + pack_str8(self.version)
                + bytes([self.active, self.boot_status])
                + pack_str8(self.slots[0].version)
                + pack_str8(self.slots[1].version)
            )
        if t == MsgType.PING:
            return ok + (self.boots & 0xFFFFFFFF).to_bytes(4, "big")
        if t == MsgType.GET_HEALTH:
            out = ok + self.battery_mv.to_bytes(2, "big") + bytes([self.battery_pct])
            out += self.temperature_c.to_bytes(1, "big", signed=True) + bytes([len(self.motors)])
            for state, current in self.motors:
                out += bytes([state]) + current.to_bytes(2, "big")
            return out
        if t == MsgType.SET_CONFIG:
            config = decode_config(frame.body)
            if encode_config(config) != frame.body:
                return bytes([Status.BAD_REQUEST])  # unsorted, a repeated key: not canonical, store nothing
            self.config = config
            return ok + zlib.crc32(encode_config(config)).to_bytes(4, "big")
        if t == MsgType.GET_CONFIG:
            return ok + encode_config(self.config)
        if t == MsgType.FW_BEGIN:
            return self._fw_begin(r)
        if t == MsgType.FW_CHUNK:
            return self._fw_chunk(r)
        if t == MsgType.FW_COMMIT:
            return self._fw_commit()
        if t == MsgType.REBOOT:
            mode = r.u8()
            if mode > 1:
                return bytes([Status.BAD_REQUEST])
            if mode == 1 and self.upd_state != UpdateState.VERIFIED:
                return bytes([Status.BAD_STATE])  # nothing verified to try: no reboot at all
            return self._reboot(mode)
        if t == MsgType.FW_CONFIRM:
            if self.upd_state != UpdateState.TRIAL:
                return bytes([Status.BAD_STATE])
            self.upd_state = UpdateState.IDLE
            self.boot_status = 0
            return ok
        return bytes([Status.BAD_REQUEST])

    @property
    def _target(self) -> int:
        return 1 - self.active

    def _fw_begin(self, r: BodyReader) -> bytes:
        size = r.u32()
        sha = r.take(32)
        version = r.str8()
        if size > SLOT_SIZE or size == 0:
            return bytes([Status.TOO_LARGE]) + (0).to_bytes(4, "big") + bytes([self._target]) + b"\x00\x00"
        if self.upd_state == UpdateState.TRIAL:
            # The inactive slot holds the known-good image the bootloader would roll back to: erasing
            # it now could leave an unconfirmed image as the only one. FW_CONFIRM or REBOOT first.
            return bytes([Status.BAD_STATE]) + (0).to_bytes(4, "big") + bytes([self._target]) + b"\x00\x00"
        same = (
            self.upd_state == UpdateState.RECEIVING
            and self.upd_size == size
            and self.upd_sha == sha
            and self.upd_version == version
        )
        if not same:
            # A different image (or none in progress): erase the inactive slot and start over.
            self.upd_state = UpdateState.RECEIVING
            self.upd_size, self.upd_sha, self.upd_version = size, sha, version
            self.upd_buf = bytearray()
            self.slots[self._target] = Slot("")
            if self.erase_time > 0:
                self._busy_until = self.clock() + self.erase_time
                return _busy()
        return (
            bytes([Status.OK])
            + len(self.upd_buf).to_bytes(4, "big")
            + bytes([self._target])
            + SIM_MAX_CHUNK.to_bytes(2, "big")
        )

    def _fw_chunk(self, r: BodyReader) -> bytes:
        offset = r.u32()
        crc = r.u32()
        data = r.rest()
        have = len(self.upd_buf)

        def reply(status: Status) -> bytes:
            return bytes([status]) + len(self.upd_buf).to_bytes(4, "big")

        if self.upd_state != UpdateState.RECEIVING:
            return reply(Status.BAD_STATE)
        if zlib.crc32(data) != crc:
            return reply(Status.CHUNK_CRC)
        if offset != have:
            return reply(Status.OUT_OF_ORDER)  # duplicate or gap: tell the host where we are
        if len(data) > SIM_MAX_CHUNK or have + len(data) > self.upd_size:
            return reply(Status.TOO_LARGE)
        self.chunk_offsets.append(offset)
        written = bytearray(data)
        if self.faults.corrupt_flash and have == 0 and written:
            written[0] ^= 0x01
        self.upd_buf += written
        return reply(Status.OK)

    def _fw_commit(self) -> bytes:
        if self.upd_state == UpdateState.VERIFIED:
            return bytes([Status.OK])  # asked again (after BUSY or a lost answer): already verified
        if self.upd_state != UpdateState.RECEIVING:
            return bytes([Status.BAD_STATE])
        if len(self.upd_buf) != self.upd_size:
            return bytes([Status.INCOMPLETE])
        if self.hash_time > 0 and not self._hashing:
            self._hashing = True
            self._busy_until = self.clock() + self.hash_time
            return _busy()
        self._hashing = False
        if hashlib.sha256(self.upd_buf).digest() != self.upd_sha:
            self.upd_state = UpdateState.IDLE
            self.slots[self._target] = Slot("")
            return bytes([Status.HASH_MISMATCH])
        self.slots[self._target] = Slot(self.upd_version, bytes(self.upd_buf))
        self.upd_state = UpdateState.VERIFIED
        return bytes([Status.OK])

    def _reboot(self, mode: int) -> bytes:
        self.boots += 1
        if mode == 1 and self.upd_state == UpdateState.VERIFIED:
            self.previous_active = self.active
            if self.faults.fail_boot:
                # The new image crashed; the watchdog reset lands in the bootloader, which
                # marks the slot bad and boots the old one.
                self.slots[self._target] = Slot("")
                self.boot_status = 2
                self.upd_state = UpdateState.IDLE
            else:
                self.active = self._target
                self.boot_status = 1
                self.upd_state = UpdateState.TRIAL
        elif self.upd_state == UpdateState.TRIAL:
            # Rebooted before the host confirmed the new image: the bootloader rolls back.
            self.slots[self.active] = Slot("")
            self.active = self.previous_active
            self.boot_status = 2
            self.upd_state = UpdateState.IDLE
        elif self.boot_status == 1:
            self.boot_status = 0
        return bytes([Status.OK])


def _busy() -> bytes:
    return bytes([Status.BUSY]) + BUSY_RETRY_MS.to_bytes(2, "big")
