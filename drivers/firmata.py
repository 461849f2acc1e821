"""Arduino-class kits running StandardFirmata; firmware written through the Optiboot bootloader (STK500 v1)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Self

from drivers.codecs import firmata as fm
from drivers.codecs import stk500
from drivers.errors import DeviceTimeout, FrameError, ProtocolError
from drivers.links import Link, MemoryHub, open_link
from drivers.session import StreamSession
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

# StandardFirmata answers a query within one main-loop pass (a few ms); 2 s covers a board
# still running setup() after a reset, which on a Leonardo-class board takes about a second.
QUERY_TIMEOUT = 2.0
# After a reset StandardFirmata needs ~1.5 s (bootloader wait + setup) before it listens.
BOOT_TIMEOUT = 5.0
# Optiboot waits about 1 s for a sync after reset; avrdude tries a handful of times.
SYNC_ATTEMPTS = 10
SYNC_TIMEOUT = 0.2
# A page write plus the flash erase takes ~5 ms on an ATmega328P.
STK_TIMEOUT = 1.0
# Analog health: a supply rail measured through a divider on the configured pin; below these
# fractions of full scale the kit's regulator is sagging (USB hub overloaded).
SUPPLY_LOW_FRACTION = 0.80
SUPPLY_FAULT_FRACTION = 0.60
ANALOG_FULL_SCALE = 1023
# Health waits for this many analog reports to average out noise.
HEALTH_SAMPLES = 4

ResetLine = Callable[[], Awaitable[None]]


def serial_dtr_reset(port: object) -> ResetLine:
    """Pulse DTR low, as the Arduino IDE does, to reset the board into its bootloader."""

    async def pulse() -> None:
        def toggle() -> None:
            port.dtr = False  # type: ignore[attr-defined]
            port.rts = False  # type: ignore[attr-defined]
            import time

            time.sleep(0.25)  # the auto-reset capacitor needs a clear edge; runs in a worker thread
            port.dtr = True  # type: ignore[attr-defined]
            port.rts = True  # type: ignore[attr-defined]

        await asyncio.to_thread(toggle)

    return pulse


class FirmataBoard:
    """One connection to one StandardFirmata board."""

    family = Family.FIRMATA

    def __init__(self, session: StreamSession, *, reset: ResetLine | None = None,
                 health_pin: int = 0, hardware_id: str = "", query_timeout: float = QUERY_TIMEOUT,
                 boot_timeout: float = BOOT_TIMEOUT) -> None:
        self.session = session
        self.query_timeout = query_timeout
        self.boot_timeout = boot_timeout
        # Firmata has no serial number of its own: the hardware id is the USB adapter's (discovery).
        self.hardware_id = hardware_id
        self.reset_line = reset
        self.health_pin = health_pin
        self.decoder = fm.FirmataDecoder(from_device=True)
        self.messages: list[fm.Message] = []
        self.identity: DeviceIdentity | None = None
        self.capabilities: tuple[tuple[tuple[int, int], ...], ...] = ()
        self.in_bootloader = False

    @classmethod
    async def open(cls, url: str, *, memory_hub: MemoryHub | None = None, reset: ResetLine | None = None,
                   health_pin: int = 0, hardware_id: str = "", **timeouts: float) -> FirmataBoard:
        link = await open_link(url, memory_hub=memory_hub)
        if reset is None and url.startswith("serial:"):
            reset = _reset_from_link(link)
        return await cls.over(link, reset=reset, health_pin=health_pin, hardware_id=hardware_id, **timeouts)

    @classmethod
    async def over(cls, link: Link, *, reset: ResetLine | None = None, health_pin: int = 0,
                   hardware_id: str = "", **timeouts: float) -> FirmataBoard:
        session = StreamSession(link, name=f"firmata:{link.url}")
        await session.start()
        return cls(session, reset=reset, health_pin=health_pin, hardware_id=hardware_id, **timeouts)

    async def aclose(self) -> None:
        await self.session.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- Firmata exchange -----------------------------------------------------------------

    def _pump(self) -> None:
        self.messages += self.decoder.feed(self.session.discard())

    async def _send(self, *msgs: fm.Message) -> None:
        await self.session.write(b"".join(fm.encode(m) for m in msgs))

    async def _await(self, match: Callable[[fm.Message], bool], timeout: float, what: str) -> fm.Message:
        """Wait for a message matching `match`, keeping the others (analog reports) queued."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._pump()
            for i, msg in enumerate(self.messages):
                if match(msg):
                    del self.messages[i]
                    return msg
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeviceTimeout(f"{self.session.name}: no {what}")
            try:
                await self.session.wait_data(remaining, what)
            except DeviceTimeout:
                continue

    async def _query(self, request: fm.Message, match: Callable[[fm.Message], bool], what: str,
                     timeout: float | None = None) -> fm.Message:
        async with self.session.lock:
            await self._send(request)
            return await self._await(match, timeout or self.query_timeout, what)

    # ---- device operations ----------------------------------------------------------------

    async def identify(self) -> DeviceIdentity:
        version = await self._query(fm.VersionQuery(), lambda m: isinstance(m, fm.VersionReport),
                                    "version report")
        fw = await self._query(fm.Sysex(fm.REPORT_FIRMWARE), _sysex(fm.REPORT_FIRMWARE), "firmware report")
        caps = await self._query(fm.Sysex(fm.CAPABILITY_QUERY), _sysex(fm.CAPABILITY_RESPONSE),
                                 "capability response")
        mapping = await self._query(fm.Sysex(fm.ANALOG_MAPPING_QUERY), _sysex(fm.ANALOG_MAPPING_RESPONSE),
                                    "analog mapping")
        assert isinstance(version, fm.VersionReport)
        try:
            major, minor, name = fm.parse_firmware_report(fw)  # type: ignore[arg-type]
            self.capabilities = fm.parse_capability_response(caps)  # type: ignore[arg-type]
            analog = fm.parse_analog_mapping(mapping)  # type: ignore[arg-type]
        except FrameError as err:
            raise ProtocolError(f"malformed Firmata answer: {err}") from err
        analog_pins = sum(1 for c in analog if c is not None)
        self.identity = DeviceIdentity(
            Family.FIRMATA,
            self.hardware_id,
            _board_model(len(self.capabilities), analog_pins),
            f"{major}.{minor}",
            (("firmware_name", name), ("protocol", f"{version.major}.{version.minor}"),
             ("pins", str(len(self.capabilities))), ("analog_pins", str(analog_pins))),
        )
        return self.identity

    async def read_health(self) -> Health:
        """Sample the analog health pin (a divider on the supply rail) through analog reporting."""
        channel = self.health_pin
        async with self.session.lock:
            self.messages = [m for m in self.messages if not isinstance(m, fm.AnalogValue)]
            await self._send(fm.ReportAnalog(channel, True))
            samples = []
            try:
                for _ in range(HEALTH_SAMPLES):
                    msg = await self._await(
                        lambda m: isinstance(m, fm.AnalogValue) and m.channel == channel, self.query_timeout,
                        "analog report")
                    assert isinstance(msg, fm.AnalogValue)
                    samples.append(msg.value)
            finally:
                if self.session.is_open:
                    await self._send(fm.ReportAnalog(channel, False))
        value = sum(samples) / len(samples)
        fraction = value / ANALOG_FULL_SCALE
        problems: tuple[str, ...]
        if fraction < SUPPLY_FAULT_FRACTION:
            status, problems = HealthStatus.FAULT, ("supply voltage too low",)
        elif fraction < SUPPLY_LOW_FRACTION:
            status, problems = HealthStatus.DEGRADED, ("supply voltage low",)
        else:
            status, problems = HealthStatus.OK, ()
        return Health(status, ((f"a{channel}_raw", value), ("supply_fraction", round(fraction, 3))), problems)

    async def apply_config(self, config: Mapping[str, str]) -> ConfigResult:
        """Firmata keeps no settings: apply pin modes (`pin.N=MODE`) and `sampling_interval_ms`, verified
        through pin-state queries."""
        modes: dict[int, int] = {}
        interval: int | None = None
        try:
            for key, value in config.items():
                if key.startswith("pin."):
                    modes[int(key[4:])] = fm.PinMode[str(value).upper()]
                elif key == "sampling_interval_ms":
                    interval = int(value)
                    if not 1 <= interval <= 0x3FFF:
                        raise ValueError("sampling interval out of range")
        except (ValueError, KeyError) as err:
            return ConfigResult(False, (), f"unsupported Firmata setting: {err}")
        for pin, mode in modes.items():
            if self.capabilities and (pin >= len(self.capabilities)
                                      or mode not in {m for m, _ in self.capabilities[pin]}):
                return ConfigResult(False, (), f"pin {pin} does not support {fm.PinMode(mode).name}")
        async with self.session.lock:
            msgs: list[fm.Message] = [fm.SetPinMode(p, m) for p, m in modes.items()]
            if interval is not None:
                msgs.append(fm.sampling_interval(interval))
            if msgs:
                await self._send(*msgs)
            for pin, mode in modes.items():
                await self._send(fm.Sysex(fm.PIN_STATE_QUERY, bytes([pin])))
                def is_state(m: fm.Message, p: int = pin) -> bool:
                    return (isinstance(m, fm.Sysex) and m.command == fm.PIN_STATE_RESPONSE
                            and m.data[:1] == bytes([p]))

                state = await self._await(is_state, self.query_timeout, f"pin {pin} state")
                _, got, _ = fm.parse_pin_state(state)  # type: ignore[arg-type]
                if got != mode:
                    return ConfigResult(False, (), f"pin {pin} reports mode {got}, wanted {mode}")
        return ConfigResult(True, tuple(sorted(config)))

    async def reboot(self) -> None:
        """SYSTEM_RESET: StandardFirmata resets its state; wait until it answers a version query."""
        async with self.session.lock:
            await self._send(fm.SystemReset())
        await self._wait_for_firmata(self.boot_timeout)

    async def _wait_for_firmata(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self._query(fm.VersionQuery(), lambda m: isinstance(m, fm.VersionReport),
                                  "version report", timeout=min(self.query_timeout, timeout))
                return
            except DeviceTimeout:
                if loop.time() > deadline:
                    raise

    # ---- firmware through the bootloader --------------------------------------------------

    async def _stk(self, cmd: int, args: bytes = b"", timeout: float = STK_TIMEOUT) -> bytes:
        s = self.session
        await s.write(stk500.command(cmd, args))
        raw = await s.read_exact(stk500.answer_length(cmd, args), timeout)
        return stk500.parse_answer(raw)

    async def flash(self, image: FirmwareImage, progress: ProgressCallback = NO_PROGRESS) -> FlashResult:
        """Reset into Optiboot, write pages that differ (so a retry resumes), verify, start the sketch."""
        try:
            before = (await self.identify()).firmware_version
        except DeviceTimeout:
            # No Firmata answer: a half-written sketch from an interrupted flash. The bootloader
            # still works, so carry on and repair it.
            before = "unknown"
        if not image.data or not image.verify():
            return FlashResult(False, before, before, "image does not match its sha256; not sent")
        if before == image.version:
            return FlashResult(True, before, before, "already at target version")
        if len(image.data) > stk500.APP_FLASH_SIZE:
            return FlashResult(False, before, before, "image larger than application flash")
        if self.reset_line is None:
            return FlashResult(False, before, before, "no reset line to reach the bootloader on this link")
        data = image.data + b"\xff" * (-len(image.data) % stk500.PAGE_SIZE)
        pages = len(data) // stk500.PAGE_SIZE
        written = 0
        skipped = 0
        async with self.session.lock:
            await self.reset_line()
            await self._sync()
            sig = await self._stk(stk500.READ_SIGN)
            if sig != stk500.ATMEGA328P_SIGNATURE:
                return FlashResult(False, before, before, f"unexpected chip signature {sig.hex()}")
            await self._stk(stk500.ENTER_PROGMODE)
            for i in range(pages):
                addr = i * stk500.PAGE_SIZE
                page = data[addr : addr + stk500.PAGE_SIZE]
                await self._stk(stk500.LOAD_ADDRESS, (addr // 2).to_bytes(2, "little"))
                current = await self._stk(stk500.READ_PAGE, len(page).to_bytes(2, "big") + b"F")
                if current == page:
                    skipped += 1  # already there (an earlier interrupted attempt wrote it)
                else:
                    await self._stk(stk500.LOAD_ADDRESS, (addr // 2).to_bytes(2, "little"))
                    await self._stk(stk500.PROG_PAGE, len(page).to_bytes(2, "big") + b"F" + page)
                    await self._stk(stk500.LOAD_ADDRESS, (addr // 2).to_bytes(2, "little"))
                    check = await self._stk(stk500.READ_PAGE, len(page).to_bytes(2, "big") + b"F")
                    if check != page:
                        await self._stk(stk500.LEAVE_PROGMODE)
                        return FlashResult(False, before, "unknown", f"verify failed at 0x{addr:04x}",
                                           skipped * stk500.PAGE_SIZE, written)
                    written += len(page)
                progress(Progress("flash", (i + 1) * stk500.PAGE_SIZE, len(data)))
            await self._stk(stk500.LEAVE_PROGMODE)
            self.session.discard()
            self.messages.clear()
        progress(Progress("boot", 0, 1))
        try:
            await self._wait_for_firmata(self.boot_timeout)
            after = (await self.identify()).firmware_version
        except DeviceTimeout:
            return FlashResult(False, before, "unknown", "sketch does not answer Firmata after flashing",
                               skipped * stk500.PAGE_SIZE, written)
        progress(Progress("boot", 1, 1))
        ok = after == image.version
        return FlashResult(ok, before, after, "" if ok else f"board reports {after} after flashing",
                           skipped * stk500.PAGE_SIZE, written)

    async def _sync(self) -> None:
        for _ in range(SYNC_ATTEMPTS):
            self.session.discard()
            try:
                await self._stk(stk500.GET_SYNC, timeout=SYNC_TIMEOUT)
                self.in_bootloader = True
                return
            except (DeviceTimeout, FrameError):
                continue
        raise DeviceTimeout(f"{self.session.name}: bootloader did not answer STK500 sync")


def _sysex(command: int) -> Callable[[fm.Message], bool]:
    return lambda m: isinstance(m, fm.Sysex) and m.command == command


def _board_model(pins: int, analog: int) -> str:
    if pins == 20 and analog == 6:
        return "arduino-uno-class"
    if pins == 70 and analog == 16:
        return "arduino-mega-class"
    return f"firmata-{pins}pin"


def _reset_from_link(link: Link) -> ResetLine | None:
    port = getattr(link, "serial_port", None)
    if port is None:
        return None
    return serial_dtr_reset(port)

