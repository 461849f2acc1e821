"""Educational robots over the LabFleet robot protocol (docs/protocol-serial-robot.md)."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import zlib
from collections.abc import Mapping
from typing import Self, TypedDict, Unpack

from drivers.codecs.robot import (
    MAX_BODY,
    MAX_CHUNK_DATA,
    PROTOCOL_MAX,
    BodyReader,
    MsgType,
    RobotFrame,
    Status,
    decode_config,
    encode_config,
    pack_str8,
)
from drivers.errors import DeviceError, DeviceTimeout, FrameError, ProtocolError
from drivers.links import Link, MemoryHub, open_link
from drivers.session import ArqSession
from drivers.types import (
    NO_PROGRESS,
    ConfigResult,
    DeviceIdentity,
    Family,
    FirmwareImage,
    FlashResult,
    Health,
    HealthStatus,
    Progress,
    ProgressCallback,
)

log = logging.getLogger(__name__)

# The robot's bootloader verifies the new slot and starts the app in about a second on real
# hardware; 10 s allows a slow SPI flash and a USB re-enumeration before we call it dead.
BOOT_TIMEOUT = 10.0
# How long one request may keep answering BUSY. Erasing a 1 MiB slot of SPI flash takes up to ~10 s at
# a datasheet's worst case (64 KiB block erase ≤ 600 ms × 16), and SHA-256 over it a few seconds on a
# small MCU; 30 s covers both with margin and still ends a stalled flash well inside a minute.
BUSY_BUDGET = 30.0
# Bounds on the robot's retry_after_ms hint: a zero would spin the line, a huge one stall the update.
BUSY_MIN_WAIT, BUSY_MAX_WAIT = 0.01, 1.0
# Chunk sizes for the update. The chunk shrinks when a line is noisy (a long frame is more
# likely to be hit) and grows back when it is clean. 448 leaves room for the chunk header in a body.
MAX_CHUNK = 448
MIN_CHUNK = 32
START_CHUNK = 256
# Retransmissions on one chunk that make us halve the chunk size, and clean chunks to double it.
SHRINK_AFTER_RETRIES = 2
GROW_AFTER_CLEAN = 16
# Attempts on one chunk before giving up on its size and resending the bytes as a shorter chunk.
ATTEMPTS_BEFORE_SHRINK = 6
# Health thresholds the robot vendor documents for a NiMH pack and the motor drivers.
BATTERY_FAULT_PCT = 5
BATTERY_LOW_PCT = 20
TEMP_HIGH_C = 60

BOOT_OK, BOOT_TRIAL, BOOT_ROLLED_BACK = 0, 1, 2
BOOT_NAMES = {BOOT_OK: "ok", BOOT_TRIAL: "trial", BOOT_ROLLED_BACK: "rolled_back"}
MOTOR_STATES = {0: "ok", 1: "stalled", 2: "overcurrent", 3: "disconnected"}
REBOOT_NORMAL, REBOOT_TRIAL = 0, 1
# unique_id becomes the MQTT username `robot-<uid>` and part of topic paths and mosquitto's password file:
# no ':', '/', '+', '#', spaces or non-ASCII; 32 bytes keep the username under the 40 the docs promise.
UNIQUE_ID = re.compile(r"[A-Za-z0-9._-]{1,32}")


def _check(frame: RobotFrame, expected: MsgType) -> BodyReader:
    """Check a response's type; return a reader positioned after an OK status byte."""
    if frame.type != expected:
        raise ProtocolError(f"expected {expected.name}, got type {frame.type:#x}")
    reader = BodyReader(frame.body)
    status = reader.u8()
    if status != Status.OK:
        raise DeviceError(f"{expected.name}: device status {_status_name(status)}", status=status)
    return reader


def _status_name(status: int) -> str:
    try:
        return Status(status).name
    except ValueError:
        return str(status)


class SessionOptions(TypedDict, total=False):
    """What `RobotDevice.over` passes on to its ArqSession (see drivers.session for each default)."""

    ack_timeout: float
    max_attempts: int
    keepalive_interval: float | None
    journal: list[RobotFrame] | None


class RobotOptions(SessionOptions, total=False):
    """What `RobotDevice.open` passes on to `RobotDevice.over`."""

    rng: random.Random | None
    boot_timeout: float
    busy_budget: float


class RobotDevice:
    """One connection to one robot."""

    family = Family.ROBOT

    def __init__(
        self,
        session: ArqSession,
        *,
        boot_timeout: float = BOOT_TIMEOUT,
        rng: random.Random | None = None,
        busy_budget: float = BUSY_BUDGET,
    ) -> None:
        self.session = session
        self.boot_timeout = boot_timeout
        self.busy_budget = busy_budget
        self.busy_waits = 0
        self._rng = rng or random.Random()
        self.identity: DeviceIdentity | None = None

    @classmethod
    async def open(
        cls, url: str, *, memory_hub: MemoryHub | None = None, **kwargs: Unpack[RobotOptions]
    ) -> RobotDevice:
        link = await open_link(url, memory_hub=memory_hub)
        return await cls.over(link, **kwargs)

    @classmethod
    async def over(
        cls,
        link: Link,
        *,
        rng: random.Random | None = None,
        boot_timeout: float = BOOT_TIMEOUT,
        busy_budget: float = BUSY_BUDGET,
        **session_kwargs: Unpack[SessionOptions],
    ) -> RobotDevice:
        rng = rng or random.Random()
        session = ArqSession(link, name=f"robot:{link.url}", rng=rng, **session_kwargs)
        await session.start()
        return cls(session, boot_timeout=boot_timeout, rng=rng, busy_budget=busy_budget)

    async def aclose(self) -> None:
        await self.session.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(self, mtype: MsgType, body: bytes = b"", *, attempts: int | None = None) -> RobotFrame:
        """One request; while the robot answers BUSY, ask again after its hint, up to `busy_budget`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.busy_budget
        while True:
            frame = await self.session.request(mtype, body, attempts=attempts)
            if frame.body[:1] != bytes([Status.BUSY]):
                return frame
            self.busy_waits += 1
            if loop.time() >= deadline:
                raise DeviceTimeout(
                    f"{self.session.name}: {mtype.name} still BUSY after {self.busy_budget:g} s"
                )
            hint = int.from_bytes(frame.body[1:3], "big") / 1000 if len(frame.body) >= 3 else BUSY_MAX_WAIT
            await asyncio.sleep(
                min(max(hint, BUSY_MIN_WAIT), BUSY_MAX_WAIT, max(0.0, deadline - loop.time()))
            )

    # ---- identify -------------------------------------------------------------------------

    async def identify(self, *, timeout: float | None = None, attempts: int | None = None) -> DeviceIdentity:
        """HELLO: starts a protocol session on the device (clearing its duplicate cache) and identifies it."""
        session_id = self._rng.getrandbits(32)
        frame = await self.session.request(
            MsgType.HELLO,
            session_id.to_bytes(4, "big") + bytes([PROTOCOL_MAX]),
            timeout=timeout,
            attempts=attempts,
        )
        r = _check(frame, MsgType.IDENTITY)
        proto = r.u8()
        if not 1 <= proto <= PROTOCOL_MAX:
            raise ProtocolError(f"robot answered protocol {proto}; this host offered 1..{PROTOCOL_MAX}")
        uid = r.str8()
        if not UNIQUE_ID.fullmatch(uid):
            raise ProtocolError(
                f"robot reported unique_id {uid!r}; the protocol allows 1-32 of A-Z a-z 0-9 . _ -"
            )
        model = r.str8()
        version = r.str8()
        active = r.u8()
        boot = r.u8()
        slot_versions = (r.str8(), r.str8())
        self.identity = DeviceIdentity(
            Family.ROBOT,
            f"robot-{uid}",  # no ':': the identity becomes an MQTT username (mosquitto's password file)
            model,
            version,
            (
                ("protocol", str(proto)),
                ("active_slot", "AB"[active & 1]),
                ("boot_status", BOOT_NAMES.get(boot, str(boot))),
                ("slot_a", slot_versions[0]),
                ("slot_b", slot_versions[1]),
            ),
        )
        return self.identity

    # ---- health ---------------------------------------------------------------------------

    async def read_health(self) -> Health:
        r = _check(await self._request(MsgType.GET_HEALTH), MsgType.HEALTH)
        battery_mv = r.u16()
        battery_pct = r.u8()
        temp_c = r.i8()
        readings: list[tuple[str, float]] = [
            ("battery_mv", battery_mv),
            ("battery_pct", battery_pct),
            ("temperature_c", temp_c),
        ]
        problems: list[str] = []
        status = HealthStatus.OK
        for i in range(r.u8()):
            state = r.u8()
            current = r.u16()
            readings.append((f"motor{i}_current_ma", current))
            if state != 0:
                problems.append(f"motor {i} {MOTOR_STATES.get(state, 'unknown')}")
                status = HealthStatus.FAULT
        if battery_pct <= BATTERY_FAULT_PCT:
            problems.append("battery empty")
            status = HealthStatus.FAULT
        elif battery_pct < BATTERY_LOW_PCT:
            problems.append("battery low")
            status = max(status, HealthStatus.DEGRADED, key=_severity)
        if temp_c >= TEMP_HIGH_C:
            problems.append("temperature high")
            status = max(status, HealthStatus.DEGRADED, key=_severity)
        return Health(status, tuple(readings), tuple(problems))

    # ---- configuration --------------------------------------------------------------------

    async def apply_config(self, config: Mapping[str, str]) -> ConfigResult:
        wanted = {str(k): str(v) for k, v in config.items()}
        try:
            body = encode_config(wanted)
        except FrameError as err:
            return ConfigResult(False, (), f"config cannot be encoded: {err}")
        if len(body) > MAX_BODY:
            return ConfigResult(False, (), f"config is {len(body)} bytes, the protocol carries {MAX_BODY}")
        try:
            r = _check(await self._request(MsgType.SET_CONFIG, body), MsgType.CONFIG_OK)
        except DeviceError as err:
            return ConfigResult(False, (), str(err))
        if r.u32() != zlib.crc32(body):
            return ConfigResult(False, (), "device stored a different configuration")
        return ConfigResult(True, tuple(sorted(wanted)))

    async def read_config(self) -> dict[str, str]:
        r = _check(await self._request(MsgType.GET_CONFIG), MsgType.CONFIG)
        return decode_config(r.rest())

    # ---- firmware -------------------------------------------------------------------------

    async def flash(self, image: FirmwareImage, progress: ProgressCallback = NO_PROGRESS) -> FlashResult:
        """Write `image` to the inactive slot, trial-boot it, confirm it; resumes an interrupted transfer.

        Raises LinkClosed if the cable goes away (call again after replug to resume).
        """
        ident = await self.identify()
        before = ident.firmware_version
        if not image.data or not image.verify():
            return FlashResult(False, before, before, "image does not match its sha256; not sent")
        if before == image.version and ident.detail("boot_status") == "ok":
            return FlashResult(True, before, before, "already at target version")
        if ident.detail("boot_status") == "trial":
            # An earlier update stopped between its trial boot and FW_CONFIRM; the robot refuses FW_BEGIN
            # now (it would erase the rollback image). The target answering HELLO has booted: confirm it.
            # Anything else is rolled back first, so the new transfer overwrites the unconfirmed image.
            if before == image.version:
                _check(await self._request(MsgType.FW_CONFIRM), MsgType.FW_CONFIRM_ACK)
                return FlashResult(True, before, before, "confirmed the target left in trial")
            ident = await self._reboot_and_wait(REBOOT_NORMAL)
            before = ident.firmware_version
        begin = len(image.data).to_bytes(4, "big") + bytes.fromhex(image.sha256) + pack_str8(image.version)
        try:
            r = _check(await self._request(MsgType.FW_BEGIN, begin), MsgType.FW_BEGIN_ACK)
        except DeviceError as err:
            return FlashResult(False, before, before, f"device refused the update: {err}")
        offset = r.u32()
        slot = "AB"[r.u8() & 1]
        offered_chunk = r.u16()
        if not 1 <= offered_chunk <= MAX_CHUNK_DATA:
            raise ProtocolError(
                f"robot offered max_chunk {offered_chunk}; the protocol allows 1..{MAX_CHUNK_DATA}"
            )
        max_chunk = min(offered_chunk, MAX_CHUNK)
        resumed_from = offset
        if offset:
            log.info("%s: resuming update at byte %d of %d", self.session.name, offset, len(image.data))
        total = len(image.data)
        chunk = min(START_CHUNK, max_chunk)
        clean = 0
        sent = 0
        while offset < total:
            data = image.data[offset : offset + chunk]
            body = offset.to_bytes(4, "big") + zlib.crc32(data).to_bytes(4, "big") + data
            retrans_before = self.session.retransmits
            try:
                frame = await self._request(
                    MsgType.FW_CHUNK, body, attempts=ATTEMPTS_BEFORE_SHRINK if chunk > MIN_CHUNK else None
                )
            except DeviceTimeout:
                if chunk <= MIN_CHUNK:
                    raise
                chunk = max(MIN_CHUNK, chunk // 2)  # a long frame rarely survives this line: go shorter
                clean = 0
                continue
            if frame.type != MsgType.FW_CHUNK_ACK:
                raise ProtocolError(f"expected FW_CHUNK_ACK, got {frame.type:#x}")
            rr = BodyReader(frame.body)
            status = rr.u8()
            next_offset = rr.u32()
            if status not in (Status.OK, Status.CHUNK_CRC, Status.OUT_OF_ORDER):
                return FlashResult(
                    False, before, before, f"chunk at {offset}: {_status_name(status)}", resumed_from, sent
                )
            if not 0 <= next_offset <= total:
                raise ProtocolError(f"device asked for offset {next_offset} of {total}")
            sent += len(data) if status == Status.OK else 0
            offset = next_offset
            retried = self.session.retransmits - retrans_before
            if retried >= SHRINK_AFTER_RETRIES and chunk > MIN_CHUNK:
                chunk = max(MIN_CHUNK, chunk // 2)
                clean = 0
            elif retried == 0:
                clean += 1
                if clean >= GROW_AFTER_CLEAN and chunk < max_chunk:
                    chunk = min(max_chunk, chunk * 2)
                    clean = 0
            progress(Progress("flash", offset, total))
        frame = await self._request(MsgType.FW_COMMIT)
        if frame.type != MsgType.FW_COMMIT_ACK:
            raise ProtocolError(f"expected FW_COMMIT_ACK, got {frame.type:#x}")
        status = BodyReader(frame.body).u8()
        if status != Status.OK:
            return FlashResult(
                False,
                before,
                before,
                f"device rejected the image: {_status_name(status)}",
                resumed_from,
                sent,
            )
        progress(Progress("boot", 0, 1))
        after_boot = await self._reboot_and_wait(REBOOT_TRIAL)
        boot = after_boot.detail("boot_status")
        if after_boot.firmware_version != image.version or boot != "trial":
            return FlashResult(
                False,
                before,
                after_boot.firmware_version,
                f"new image failed to boot (boot status {boot}); "
                f"running slot {after_boot.detail('active_slot')}",
                resumed_from,
                sent,
            )
        _check(await self._request(MsgType.FW_CONFIRM), MsgType.FW_CONFIRM_ACK)
        progress(Progress("boot", 1, 1))
        log.info("%s: firmware %s -> %s in slot %s", self.session.name, before, image.version, slot)
        return FlashResult(True, before, image.version, "", resumed_from, sent)

    # ---- reboot ---------------------------------------------------------------------------

    async def reboot(self) -> None:
        await self._reboot_and_wait(REBOOT_NORMAL)

    async def _reboot_and_wait(self, mode: int) -> DeviceIdentity:
        _check(await self._request(MsgType.REBOOT, bytes([mode])), MsgType.REBOOT_ACK)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.boot_timeout
        while True:
            try:
                # While booting the robot ignores input: keep saying HELLO until it answers.
                return await self.identify(attempts=1)
            except DeviceTimeout:
                if loop.time() > deadline:
                    raise DeviceTimeout(f"{self.session.name}: no answer after reboot") from None


def _severity(status: HealthStatus) -> int:
    return {HealthStatus.OK: 0, HealthStatus.DEGRADED: 1, HealthStatus.FAULT: 2}[status]
