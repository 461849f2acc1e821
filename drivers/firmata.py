"""Arduino-class kits running StandardFirmata; firmware written through the Optiboot bootloader (STK500
v1)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import statistics
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Self

from drivers import reset_lines
from drivers.codecs import firmata as fm
from drivers.codecs import ihex, stk500
from drivers.errors import DeviceTimeout, FrameError, LinkError, ProtocolError
from drivers.links import Link, MemoryHub, open_link
from drivers.reset_lines import serial_dtr_reset
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

# Defined in drivers.reset_lines; kept here too for the callers that import it with the Firmata driver.
ResetLine = reset_lines.ResetLine

# StandardFirmata talks at 57600 baud (Serial.begin(57600); firmware_profiles/kit-uno-firmata.yaml); the
# Uno's Optiboot at 115200 (what avrdude -c arduino uses for a Uno). A host at the other speed reads
# framing errors, so the line is switched for the bootloader and back for the sketch.
FIRMATA_BAUD = 57600
BOOTLOADER_BAUD = 115200
# StandardFirmata answers a query within one main-loop pass (a few ms); 2 s covers a board
# still running setup() after a reset, which on a Leonardo-class board takes about a second.
QUERY_TIMEOUT = 2.0
# After a reset StandardFirmata needs ~1.5 s (bootloader wait + setup) before it listens.
BOOT_TIMEOUT = 5.0
# Opening a Uno's port resets it (DTR): Optiboot listens for about 1 s (plus its LED flashes), then the
# sketch starts and StandardFirmata announces its version from setup(). On the emulated Uno the
# announcement comes 1.8 s after the open. Until it does, every byte goes to the bootloader, which takes
# it for an STK500 command. A board that does not reset on open says nothing: the wait then ends here.
HANDOVER_TIMEOUT = 4.0
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
# Health takes the median of this many analog reports: electrical noise and line noise (Firmata has no
# checksum, so a damaged report is a plausible wrong value) both stay out of the median.
HEALTH_SAMPLES = 5
# Firmata answers carry no checksum: an answer counts once the same one has arrived twice. At a 1% byte
# error rate a 170-byte capability response arrives intact ~18% of the time, so 60 tries leave a
# spurious failure at ~1e-5 (a silent board fails sooner, after MAX_SILENT).
QUERY_ATTEMPTS = 60
# Queries in a row without any answer before a board counts as silent: at a 1% byte error rate a query
# or its answer is lost ~5% of the time, so four in a row happen about once in 100,000 queries.
MAX_SILENT = 4
# Rounds of set-then-read-back over all pins before a configuration counts as failed.
CONFIG_ROUNDS = 12
# Bootloader sessions (reset, sync, write, verify every page) before a flash counts as failed: on a
# noisy line Optiboot drops out on a damaged terminator (~1 command in 10 at a 1% byte error rate)
# and must be reset into again; progress is kept across sessions.
FLASH_SESSIONS = 200
# Writes of one page that read back wrong before the flash counts as failed (a dying flash cell): at a
# 1% byte error rate a 128-byte page write and its read-back both arrive intact only ~7% of the time.
PAGE_WRITES = 100

# Messages kept while waiting for an answer: a board left reporting (by noise, or by another program)
# must not grow the queue without bound.
MAX_QUEUED = 256
# Pins read back around a configuration when the capability query has not run (an Uno has 20).
DEFAULT_PINS = 20
# StandardFirmata reports only major.minor; a sketch built for the fleet carries its full version in
# its name (StandardFirmata-2.5.1.ino), which identify prefers.
VERSION_IN_NAME = re.compile(r"[-_]v?(\d{1,3}\.\d{1,3}\.\d{1,3})(?:\.ino)?$")


def same_version(reported: str, target: str) -> bool:
    """After a flash: the board reports the target, or (a stock sketch name) the target's major.minor."""
    return reported == target or (reported.count(".") == 1 and target.startswith(reported + "."))


def firmware_version(major: int, minor: int, name: str) -> str:
    """The version identify reports: the sketch name's x.y.z when it has one, else Firmata's major.minor."""
    found = VERSION_IN_NAME.search(name)
    return found.group(1) if found else f"{major}.{minor}"


class FirmataBoard:
    """One connection to one StandardFirmata board."""

    family = Family.FIRMATA

    def __init__(
        self,
        session: StreamSession,
        *,
        reset: ResetLine | None = None,
        health_pin: int = 0,
        hardware_id: str = "",
        baud: int = FIRMATA_BAUD,
        query_timeout: float = QUERY_TIMEOUT,
        boot_timeout: float = BOOT_TIMEOUT,
        stk_timeout: float = STK_TIMEOUT,
        journal: list[object] | None = None,
    ) -> None:
        self.session = session
        self.baud = baud  # the sketch's line speed, set again after the bootloader
        self.stk_timeout = stk_timeout
        # Every Firmata message and STK500 (command, arguments) sent, for tests to compare with what ran.
        self.journal = journal
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
        # Firmata keeps nothing across a reset: what apply_config set, to be applied again after one.
        self.applied: dict[str, str] = {}

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        memory_hub: MemoryHub | None = None,
        reset: ResetLine | None = None,
        health_pin: int = 0,
        hardware_id: str = "",
        reset_on_open: bool | None = None,
        handover_timeout: float = HANDOVER_TIMEOUT,
        baud: int = FIRMATA_BAUD,
        **kwargs: Any,
    ) -> FirmataBoard:
        """Open a board at the sketch's line speed (`baud`; a `?baud=` in the URL wins). On a serial
        port or a pty (`reset_on_open` defaults to True there) opening resets the board, so this
        returns only once the bootloader has handed over to the sketch."""
        link = await open_link(url, memory_hub=memory_hub, baud=baud)
        if reset is None and url.startswith("serial:"):
            reset = _reset_from_link(link)
        board = await cls.over(
            link, reset=reset, health_pin=health_pin, hardware_id=hardware_id, baud=baud, **kwargs
        )
        if reset_on_open if reset_on_open is not None else url.startswith(("serial:", "pty:")):
            try:
                await board.wait_for_handover(handover_timeout)
            except BaseException:
                await board.aclose()
                raise
        return board

    @classmethod
    async def over(
        cls,
        link: Link,
        *,
        reset: ResetLine | None = None,
        health_pin: int = 0,
        hardware_id: str = "",
        **kwargs: Any,
    ) -> FirmataBoard:
        session = StreamSession(link, name=f"firmata:{link.url}")
        await session.start()
        return cls(session, reset=reset, health_pin=health_pin, hardware_id=hardware_id, **kwargs)

    async def aclose(self) -> None:
        await self.session.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def wait_for_handover(self, timeout: float = HANDOVER_TIMEOUT) -> bool:
        """After a reset, send nothing until the sketch announces its version (the bootloader has handed
        over); False when no announcement came within `timeout` (the board did not reset). The
        announcement's firmware report stays queued: identify takes it as a first answer."""
        try:
            await self._await(lambda m: isinstance(m, fm.VersionReport), timeout, "version announcement")
        except DeviceTimeout:
            log.debug("%s: no announcement in %.1f s: the board did not reset", self.session.name, timeout)
            return False
        return True

    async def _reapply(self) -> None:
        """After a reset: the pin modes and sampling interval set earlier are gone; set them again."""
        if not self.applied:
            return
        result = await self.apply_config(dict(self.applied))
        if not result.ok:
            raise ProtocolError(f"configuration not restored after the reset: {result.reason}")

    # ---- Firmata exchange -----------------------------------------------------------------

    def _pump(self) -> None:
        self.messages += self.decoder.feed(self.session.discard())
        if len(self.messages) > MAX_QUEUED:
            del self.messages[: len(self.messages) - MAX_QUEUED]  # unasked-for reports nobody waits for

    async def _send(self, *msgs: fm.Message) -> None:
        if self.journal is not None:
            self.journal.extend(msgs)
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

    async def _query(
        self,
        request: fm.Message,
        match: Callable[[fm.Message], bool],
        what: str,
        timeout: float | None = None,
    ) -> fm.Message:
        async with self.session.lock:
            await self._send(request)
            return await self._await(match, timeout or self.query_timeout, what)

    async def _stable(
        self, request: fm.Message, match: Callable[[fm.Message], bool], what: str
    ) -> fm.Message:
        """Ask until the same answer has arrived twice: Firmata has no checksum, so one answer may be
        a damaged one that still parses."""
        seen: Counter[fm.Message] = Counter()
        silent = 0
        for _ in range(QUERY_ATTEMPTS):
            heard = self.decoder.bytes_seen
            try:
                msg = await self._query(request, match, what)
            except DeviceTimeout:
                # Silent means nothing at all came back; a damaged answer still leaves bytes behind.
                self._pump()
                silent = 0 if self.decoder.bytes_seen != heard else silent + 1
                if silent >= MAX_SILENT:
                    raise  # a board that never answers is not a noisy line
                continue  # the request or the answer was lost on the line
            silent = 0
            seen[msg] += 1
            if seen[msg] >= 2:
                return msg
        raise DeviceTimeout(f"{self.session.name}: no consistent {what} after {QUERY_ATTEMPTS} queries")

    # ---- device operations ----------------------------------------------------------------

    async def identify(self) -> DeviceIdentity:
        version = await self._stable(
            fm.VersionQuery(), lambda m: isinstance(m, fm.VersionReport), "version report"
        )
        fw = await self._stable(fm.Sysex(fm.REPORT_FIRMWARE), _sysex(fm.REPORT_FIRMWARE), "firmware report")
        caps = await self._stable(
            fm.Sysex(fm.CAPABILITY_QUERY), _sysex(fm.CAPABILITY_RESPONSE), "capability response"
        )
        mapping = await self._stable(
            fm.Sysex(fm.ANALOG_MAPPING_QUERY), _sysex(fm.ANALOG_MAPPING_RESPONSE), "analog mapping"
        )
        assert isinstance(version, fm.VersionReport)
        # The three matchers above accept only Sysex messages.
        assert isinstance(fw, fm.Sysex) and isinstance(caps, fm.Sysex) and isinstance(mapping, fm.Sysex)
        try:
            major, minor, name = fm.parse_firmware_report(fw)
            self.capabilities = fm.parse_capability_response(caps)
            analog = fm.parse_analog_mapping(mapping)
        except FrameError as err:
            raise ProtocolError(f"malformed Firmata answer: {err}") from err
        analog_pins = sum(1 for c in analog if c is not None)
        self.identity = DeviceIdentity(
            Family.FIRMATA,
            self.hardware_id,
            _board_model(len(self.capabilities), analog_pins),
            firmware_version(major, minor, name),
            (
                ("firmware_name", name),
                ("protocol", f"{version.major}.{version.minor}"),
                ("pins", str(len(self.capabilities))),
                ("analog_pins", str(analog_pins)),
            ),
        )
        return self.identity

    async def read_health(self) -> Health:
        """Sample the analog health pin (a divider on the supply rail) through analog reporting."""
        channel = self.health_pin
        async with self.session.lock:
            self.messages = [m for m in self.messages if not isinstance(m, fm.AnalogValue)]
            await self._send(fm.ReportAnalog(channel, True))
            samples: list[int] = []
            try:
                for _ in range(QUERY_ATTEMPTS):
                    if len(samples) >= HEALTH_SAMPLES:
                        break
                    try:
                        msg = await self._await(
                            lambda m: isinstance(m, fm.AnalogValue) and m.channel == channel,
                            self.query_timeout,
                            "analog report",
                        )
                    except DeviceTimeout:
                        await self._send(fm.ReportAnalog(channel, True))  # the enable was lost on the line
                        continue
                    assert isinstance(msg, fm.AnalogValue)
                    samples.append(msg.value)
                else:
                    raise DeviceTimeout(f"{self.session.name}: no analog reports on A{channel}")
            finally:
                if self.session.is_open:
                    # Sent twice: a lost disable would leave the board reporting until its next reset.
                    await self._send(fm.ReportAnalog(channel, False), fm.ReportAnalog(channel, False))
        value = statistics.median(samples)
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
            if self.capabilities and (
                pin >= len(self.capabilities) or mode not in {m for m, _ in self.capabilities[pin]}
            ):
                return ConfigResult(False, (), f"pin {pin} does not support {fm.PinMode(mode).name}")
        pins = range(len(self.capabilities) or DEFAULT_PINS)
        # Firmata has no checksum: a damaged SET_PIN_MODE is executed as a command for another pin or
        # mode. So every pin's mode is read before and after, and whatever the line changed is put back.
        before = {pin: await self._pin_state(pin) for pin in pins} if modes else {}
        want = {pin: (modes.get(pin, state[0]), state[1]) for pin, state in before.items()}
        for _ in range(CONFIG_ROUNDS):
            msgs: list[fm.Message] = []
            for pin, (mode, level) in want.items():
                if before.get(pin, (None, None))[0] != mode:
                    msgs.append(fm.SetPinMode(pin, mode))
                elif mode == fm.PinMode.OUTPUT and before[pin][1] != level:
                    msgs.append(fm.SetDigitalPinValue(pin, level))
            if interval is not None:
                msgs.append(fm.sampling_interval(interval))
            if msgs:
                async with self.session.lock:
                    await self._send(*msgs)
            if not want:
                break
            before = {pin: await self._pin_state(pin) for pin in pins}
            drift = [
                pin
                for pin, (mode, level) in want.items()
                if before[pin][0] != mode or (mode == fm.PinMode.OUTPUT and before[pin][1] != level)
            ]
            if not drift:
                break
            if any(pin not in modes for pin in drift):
                log.info("%s: line noise changed pins %s; restoring them", self.session.name, drift)
        else:
            return ConfigResult(False, (), f"pins {sorted(drift)} do not keep their mode")
        for pin, mode in modes.items():
            if before.get(pin, (mode,))[0] != mode:
                return ConfigResult(False, (), f"pin {pin} reports mode {before[pin][0]}, wanted {mode}")
        self.applied.update(config)
        return ConfigResult(True, tuple(sorted(config)))

    async def _pin_state(self, pin: int) -> tuple[int, int]:
        """(mode, value) of a pin, read until two answers agree."""

        def is_state(m: fm.Message) -> bool:
            return (
                isinstance(m, fm.Sysex) and m.command == fm.PIN_STATE_RESPONSE and m.data[:1] == bytes([pin])
            )

        msg = await self._stable(fm.Sysex(fm.PIN_STATE_QUERY, bytes([pin])), is_state, f"pin {pin} state")
        assert isinstance(msg, fm.Sysex)  # is_state accepts only Sysex messages
        try:
            _, mode, value = fm.parse_pin_state(msg)
        except FrameError as err:
            raise ProtocolError(f"malformed pin state: {err}") from err
        return mode, value

    async def reboot(self) -> None:
        """SYSTEM_RESET: StandardFirmata resets its state; wait until it answers a version query."""
        async with self.session.lock:
            await self._send(fm.SystemReset())
        await self._wait_for_firmata(self.boot_timeout)
        await self._reapply()

    async def _wait_for_firmata(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self._query(
                    fm.VersionQuery(),
                    lambda m: isinstance(m, fm.VersionReport),
                    "version report",
                    timeout=min(self.query_timeout, timeout),
                )
                return
            except DeviceTimeout:
                if loop.time() > deadline:
                    raise

    # ---- firmware through the bootloader --------------------------------------------------

    async def _stk(self, cmd: int, args: bytes = b"", timeout: float | None = None) -> bytes:
        s = self.session
        timeout = self.stk_timeout if timeout is None else timeout
        if self.journal is not None:
            self.journal.append((cmd, args))
        await s.write(stk500.command(cmd, args))
        raw = await s.read_exact(stk500.answer_length(cmd, args), timeout)
        return stk500.parse_answer(raw)

    async def flash(self, image: FirmwareImage, progress: ProgressCallback = NO_PROGRESS) -> FlashResult:
        """Reset into Optiboot, write the pages that differ (so a retry resumes), read each back, check
        every page once more at the end, then start the sketch.

        STK500 v1 has no checksum either: a damaged PROG_PAGE is written as it arrived, and a damaged
        LOAD_ADDRESS sends a page elsewhere. Reading every page back (and the whole image again before
        leaving the bootloader) finds both, and the page is written again.
        """
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
        try:
            binary = ihex.parse_ihex(image.data) if ihex.looks_like_ihex(image.data) else image.data
        except FrameError as err:
            return FlashResult(False, before, before, f"image is not valid Intel HEX: {err}")
        if len(binary) > stk500.APP_FLASH_SIZE:
            return FlashResult(False, before, before, "image larger than application flash")
        if self.reset_line is None:
            return FlashResult(False, before, before, "no reset line to reach the bootloader on this link")
        data = binary + b"\xff" * (-len(binary) % stk500.PAGE_SIZE)
        pages = [data[a : a + stk500.PAGE_SIZE] for a in range(0, len(data), stk500.PAGE_SIZE)]
        good: set[int] = set()  # pages read back equal to the image in this flash
        first_pass: set[int] = set()  # pages already right when first read (an earlier attempt wrote them)
        writes: Counter[int] = Counter()
        checked: set[int] = set()  # pages read back right since the last page write
        written = 0
        async with self.session.lock:
            # Optiboot listens at its own speed; the sketch's is restored however programming ends.
            await self.session.link.set_speed(BOOTLOADER_BAUD)
            try:
                for _ in range(FLASH_SESSIONS):
                    try:
                        sig = await self._enter_bootloader()
                        if sig != stk500.ATMEGA328P_SIGNATURE:
                            return FlashResult(
                                False, before, before, f"unexpected chip signature {sig.hex()}"
                            )
                        for i, page in enumerate(pages):
                            if i in good:
                                continue
                            current = await self._page_state(i, page)
                            if not writes[i] and current == page:
                                first_pass.add(i)
                            while current != page:
                                if writes[i] >= PAGE_WRITES:
                                    await self._stk(stk500.LEAVE_PROGMODE)
                                    return FlashResult(
                                        False,
                                        before,
                                        "unknown",
                                        f"verify failed at 0x{i * stk500.PAGE_SIZE:04x}",
                                        len(first_pass) * stk500.PAGE_SIZE,
                                        written,
                                    )
                                writes[i] += 1
                                checked.clear()  # this write may land elsewhere: check every page again
                                await self._stk(
                                    stk500.LOAD_ADDRESS, (i * stk500.PAGE_SIZE // 2).to_bytes(2, "little")
                                )
                                await self._stk(stk500.PROG_PAGE, len(page).to_bytes(2, "big") + b"F" + page)
                                written += len(page)
                                current = await self._page_state(i, page)
                            good.add(i)
                            progress(Progress("flash", len(good) * stk500.PAGE_SIZE, len(data)))
                        # A damaged address may have sent a page over one already checked: check them all
                        # once after the last write (across sessions: reads write nothing).
                        for i, page in enumerate(pages):
                            if i in checked:
                                continue
                            if await self._page_state(i, page) != page:
                                good.discard(i)
                                break
                            checked.add(i)
                        if len(checked) < len(pages):
                            continue
                        await self._stk(stk500.LEAVE_PROGMODE)
                        break
                    except (DeviceTimeout, FrameError) as err:
                        # Optiboot leaves for the sketch on a damaged terminator; reset into it and go on.
                        log.debug(
                            "%s: bootloader exchange lost (%s); resetting into it again",
                            self.session.name,
                            err,
                        )
                        continue
                else:
                    return FlashResult(
                        False,
                        before,
                        "unknown",
                        "bootloader exchange keeps failing",
                        len(first_pass) * stk500.PAGE_SIZE,
                        written,
                    )
            finally:
                with contextlib.suppress(LinkError):  # an unplugged port: its own error is the one raised
                    await self.session.link.set_speed(self.baud)
            self.session.discard()
            self.messages.clear()
        progress(Progress("boot", 0, 1))
        resumed = len(first_pass) * stk500.PAGE_SIZE
        try:
            await self._wait_for_firmata(self.boot_timeout)
            after = (await self.identify()).firmware_version
        except DeviceTimeout:
            return FlashResult(
                False, before, "unknown", "sketch does not answer Firmata after flashing", resumed, written
            )
        ok = same_version(after, image.version)
        if ok:
            await self._reapply()
        progress(Progress("boot", 1, 1))
        return FlashResult(
            ok, before, after, "" if ok else f"board reports {after} after flashing", resumed, written
        )

    async def _enter_bootloader(self) -> bytes:
        """Reset into Optiboot and start programming; returns the chip signature (a wrong one only when
        it read the same twice: a damaged answer is not a wrong chip)."""
        assert self.reset_line is not None
        await self.reset_line()
        await self._sync()
        seen: Counter[bytes] = Counter()
        while True:
            sig = await self._stk(stk500.READ_SIGN)
            seen[sig] += 1
            if sig == stk500.ATMEGA328P_SIGNATURE or seen[sig] >= 2:
                break
        await self._stk(stk500.ENTER_PROGMODE)
        return sig

    async def _read_page(self, index: int) -> bytes:
        await self._stk(stk500.LOAD_ADDRESS, (index * stk500.PAGE_SIZE // 2).to_bytes(2, "little"))
        return await self._stk(stk500.READ_PAGE, stk500.PAGE_SIZE.to_bytes(2, "big") + b"F")

    async def _page_state(self, index: int, want: bytes) -> bytes:
        """What page `index` holds: `want` as soon as one read shows it, else a content read twice alike
        (a read damaged on the way back is not a wrong page)."""
        seen: Counter[bytes] = Counter()
        for _ in range(QUERY_ATTEMPTS):
            try:
                got = await self._read_page(index)
            except FrameError:
                # The answer's framing arrived damaged. If Optiboot still answers a sync, it is in
                # the bootloader and only the answer was hit; otherwise the session is lost.
                await self._sync(attempts=3)
                continue
            if got == want:
                return got
            seen[got] += 1
            if seen[got] >= 2:
                return got
        raise DeviceTimeout(f"{self.session.name}: page {index} reads differently every time")

    async def _sync(self, attempts: int = SYNC_ATTEMPTS) -> None:
        for _ in range(attempts):
            self.session.discard()
            try:
                await self._stk(stk500.GET_SYNC, timeout=min(SYNC_TIMEOUT, self.stk_timeout))
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
    """DTR through pyserial on a serial port (the B0 hang-up where the port has no modem lines)."""
    port = getattr(link, "serial_port", None)
    if port is None:
        return None
    return serial_dtr_reset(port)
