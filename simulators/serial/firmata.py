"""A simulated Arduino Uno-class kit: StandardFirmata in the sketch, Optiboot (STK500 v1) in the
bootloader."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from drivers.codecs import firmata as fm
from drivers.codecs import stk500
from drivers.links import Link
from drivers.types import Family
from fleet.runtime.supervise import cancel_and_wait
from simulators.serial.base import SimDevice, UsbIdentity

ARDUINO_VID, UNO_PID = 0x2341, 0x0043
# The UART speeds: StandardFirmata's Serial.begin(57600) in the sketch, Optiboot's 115200 on a Uno. A
# host set to another speed sees framing errors and the chip garbage: nothing gets through.
SKETCH_BAUD = 57600
BOOTLOADER_BAUD = 115200
# Optiboot leaves for the sketch when no STK500 command arrives for about a second.
BOOTLOADER_IDLE = 1.0
# The simulator reads the sketch's Firmata identity from this tag in the flashed image, the way a
# real sketch carries its name and version as string constants.
TAG = re.compile(rb"LFFW/([A-Za-z0-9_.\-]{1,40})/(\d{1,3})\.(\d{1,3})\x00")
_PWM = {3, 5, 6, 9, 10, 11}
_STK_ARGS = {
    stk500.GET_SYNC: 0,
    stk500.GET_PARAMETER: 1,
    stk500.ENTER_PROGMODE: 0,
    stk500.LEAVE_PROGMODE: 0,
    stk500.LOAD_ADDRESS: 2,
    stk500.READ_PAGE: 3,
    stk500.READ_SIGN: 0,
    0x42: 20,
    0x45: 5,
}


def sketch_image(name: str, major: int, minor: int, size: int = 12_000) -> bytes:
    """A fake sketch binary carrying the Firmata identity tag the simulator looks for."""
    body = bytes((i * 7 + 3) & 0xFF for i in range(size))
    return body + b"LFFW/" + name.encode() + f"/{major}.{minor}".encode() + b"\x00"


def uno_capabilities() -> tuple[tuple[tuple[int, int], ...], ...]:
    pins = []
    for pin in range(20):
        modes = [(fm.PinMode.INPUT, 1), (fm.PinMode.OUTPUT, 1), (fm.PinMode.PULLUP, 1)]
        if pin in _PWM:
            modes.append((fm.PinMode.PWM, 8))
        if 2 <= pin <= 19:
            modes.append((fm.PinMode.SERVO, 14))
        if pin >= 14:
            modes.append((fm.PinMode.ANALOG, 10))
        if pin in (18, 19):
            modes.append((fm.PinMode.I2C, 1))
        pins.append(tuple((int(m), r) for m, r in modes))
    return tuple(pins)


class Mode(Enum):
    SKETCH = "sketch"
    BOOTLOADER = "bootloader"
    DEAD = "dead"  # the flashed sketch does not speak Firmata


@dataclass
class FirmataSim(SimDevice):
    usb_serial: str
    # The district's shipped build (firmware_profiles/kit-uno-firmata.yaml, version 2.5.0): Firmata
    # reports 2.5, the sketch name carries the build's full version.
    firmware_name: str = "StandardFirmata-2.5.0.ino"
    version: tuple[int, int] = (2, 5)
    supply_raw: int = 1000  # A0 reads the 5 V rail through a divider
    fail_boot: bool = False  # fault: the next flashed sketch crashes at start
    # A Uno resets when its port is opened (DTR through the USB-serial chip), runs Optiboot for about a
    # second and then the sketch, which announces its version. On by default, as on a real Uno; False
    # models a board wired without the auto-reset capacitor.
    auto_reset_on_open: bool = True
    # What is wired to each digital pin a sketch reads (1 = high); an unwired pull-up pin reads 1.
    wired: dict[int, int] = field(default_factory=dict)
    # The host's line speed (SimRunner wires the pty's termios here); None: a link without one.
    line_speed: Callable[[], int | None] | None = field(default=None, repr=False)
    family = Family.FIRMATA

    flash_mem: bytearray = field(default_factory=lambda: bytearray(b"\xff" * stk500.APP_FLASH_SIZE))

    def __post_init__(self) -> None:
        self.usb = UsbIdentity(
            ARDUINO_VID, UNO_PID, self.usb_serial, "Arduino (www.arduino.cc)", "Arduino Uno"
        )
        image = sketch_image(self.firmware_name, *self.version)
        self.flash_mem[: len(image)] = image
        self.caps = uno_capabilities()
        self.mode = Mode.SKETCH
        self.resets = 0
        self.pages_written = 0
        self.programming_interrupted = False  # pages written but the session never finished
        self._address = 0
        self._stk_buf = bytearray()
        self._last_stk = 0.0
        self._reset_pins()
        self._link: Link | None = None
        # Every command the board carried out, as it understood it: Firmata messages in the sketch,
        # (command, arguments) in the bootloader. Noise tests compare this with what the host sent.
        self.executed: list[fm.Message] = []
        self.stk_executed: list[tuple[int, bytes]] = []
        self.watchdog_resets = 0
        self.speed_mismatches = 0  # chunks lost because the host's speed was not the UART's

    def _speed_ok(self) -> bool:
        """Whether the host's line speed is the one the running code set its UART to."""
        host = self.line_speed() if self.line_speed is not None else None
        if host is None:
            return True
        if host == (BOOTLOADER_BAUD if self.mode is Mode.BOOTLOADER else SKETCH_BAUD):
            return True
        self.speed_mismatches += 1
        return False

    async def _write(self, link: Link, data: bytes, *, speed_ok: bool | None = None) -> None:
        if speed_ok if speed_ok is not None else self._speed_ok():
            await link.write(data)

    def _reset_pins(self) -> None:
        self.pin_modes = [int(fm.PinMode.ANALOG) if p >= 14 else int(fm.PinMode.OUTPUT) for p in range(20)]
        self.pin_values = [0] * 20
        self.reporting: set[int] = set()
        self.reporting_ports: set[int] = set()
        self._sent_ports: dict[int, int] = {}
        self.sampling_ms = 19

    def analog_value(self, channel: int) -> int:
        return self.supply_raw if channel == 0 else 512

    def digital_level(self, pin: int) -> int:
        """What the chip reads on `pin`: its own output, what is wired to it, or the pull-up."""
        mode = self.pin_modes[pin]
        if mode == fm.PinMode.OUTPUT:
            return self.pin_values[pin]
        if mode == fm.PinMode.PULLUP:
            return self.wired.get(pin, 1)
        if mode == fm.PinMode.INPUT:
            return self.wired.get(pin, 0)
        return 0

    def port_mask(self, port: int) -> int:
        """StandardFirmata's readPort(): the levels of the port's input pins only."""
        mask = 0
        for bit in range(8):
            pin = port * 8 + bit
            if pin < 20 and self.pin_modes[pin] in (fm.PinMode.INPUT, fm.PinMode.PULLUP):
                mask |= self.digital_level(pin) << bit
        return mask

    def port_opened(self) -> None:
        """The host opened the port: DTR rises and, through the Uno's capacitor, resets the chip."""
        self.hardware_reset()

    def hardware_reset(self) -> None:
        """DTR pulse: the chip resets into Optiboot."""
        self.resets += 1
        self.mode = Mode.BOOTLOADER
        self._stk_buf.clear()
        self._last_stk = asyncio.get_running_loop().time()
        self._reset_pins()

    def _boot_sketch(self) -> bytes:
        match = TAG.search(bytes(self.flash_mem))
        if match is None or self.programming_interrupted:
            self.mode = Mode.DEAD
            return b""
        if self.fail_boot:
            self.fail_boot = False
            self.mode = Mode.DEAD
            return b""
        self.firmware_name = match.group(1).decode()
        self.version = (int(match.group(2)), int(match.group(3)))
        self.mode = Mode.SKETCH
        # StandardFirmata announces itself at start-up.
        return fm.encode(fm.VersionReport(2, 5)) + fm.encode(
            fm.firmware_report(*self.version, self.firmware_name)
        )

    async def serve(self, link: Link) -> None:
        # Plugging in is a power-on reset: Optiboot starts the sketch straight away (it only waits
        # for an upload after an external reset), and a half-written sketch does not run.
        self._reset_pins()
        greeting = self._boot_sketch()
        if greeting:
            await self._write(link, greeting)
        decoder = fm.FirmataDecoder(from_device=False)
        loop = asyncio.get_running_loop()
        reporter = asyncio.create_task(self._report_loop(link), name="firmata-sim-analog")
        handover = asyncio.create_task(self._bootloader_timeout(link), name="firmata-sim-optiboot")
        try:
            while True:
                data = await link.read()
                if self.mode is Mode.BOOTLOADER and loop.time() - self._last_stk > BOOTLOADER_IDLE:
                    out = self._boot_sketch()  # Optiboot gave up waiting and started the sketch
                    if out:
                        await self._write(link, out)
                if not self._speed_ok():
                    continue  # framing errors: the UART receives nothing it can use
                if self.mode is Mode.BOOTLOADER:
                    self._last_stk = loop.time()
                    reply = self._stk_feed(data)
                    if reply:
                        # Sent at the speed the command came in (the answer precedes any hand-over).
                        await self._write(link, reply, speed_ok=True)
                    continue
                if self.mode is Mode.DEAD:
                    continue
                answer = bytearray()
                for msg in decoder.feed(data):
                    answer += self._handle(msg)
                if answer:
                    await self._write(link, bytes(answer))
        finally:
            await cancel_and_wait([reporter, handover])

    async def _bootloader_timeout(self, link: Link) -> None:
        """Optiboot's watchdog: a second without an STK500 command starts the sketch, input or not."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(BOOTLOADER_IDLE / 10)
            if self.mode is Mode.BOOTLOADER and loop.time() - self._last_stk > BOOTLOADER_IDLE:
                out = self._boot_sketch()
                if out:
                    await self._write(link, out)

    async def _report_loop(self, link: Link) -> None:
        while True:
            await asyncio.sleep(self.sampling_ms / 1000)
            if self.mode is not Mode.SKETCH:
                continue
            out = b"".join(
                fm.encode(fm.AnalogValue(ch, self.analog_value(ch))) for ch in sorted(self.reporting)
            )
            # StandardFirmata's checkDigitalInputs(): a reporting port is sent when its inputs change.
            for port in sorted(self.reporting_ports):
                mask = self.port_mask(port)
                if self._sent_ports.get(port) != mask:
                    self._sent_ports[port] = mask
                    out += fm.encode(fm.DigitalPort(port, mask))
            if out:
                await self._write(link, out)

    def _handle(self, msg: fm.Message) -> bytes:
        if (
            isinstance(msg, fm.Sysex)
            and msg.command == fm.SAMPLING_INTERVAL
            or not isinstance(msg, fm.VersionQuery | fm.Sysex)
        ):
            self.executed.append(msg)  # state-changing commands only (queries change nothing)
        if isinstance(msg, fm.SetDigitalPinValue):
            if msg.pin < 20 and self.pin_modes[msg.pin] == fm.PinMode.OUTPUT:
                self.pin_values[msg.pin] = 1 if msg.value else 0
            return b""
        if isinstance(msg, fm.DigitalPort):
            for bit in range(8):
                pin = msg.port * 8 + bit
                if pin < 20 and self.pin_modes[pin] == fm.PinMode.OUTPUT:
                    self.pin_values[pin] = (msg.mask >> bit) & 1
            return b""
        if isinstance(msg, fm.VersionQuery):
            return fm.encode(fm.VersionReport(2, 5))
        if isinstance(msg, fm.SystemReset):
            self._reset_pins()
            return b""
        if isinstance(msg, fm.SetPinMode):
            if msg.pin < len(self.caps) and msg.mode in {m for m, _ in self.caps[msg.pin]}:
                self.pin_modes[msg.pin] = msg.mode
            return b""
        if isinstance(msg, fm.ReportAnalog):
            (self.reporting.add if msg.enable else self.reporting.discard)(msg.channel)
            return b""
        if isinstance(msg, fm.ReportDigital):
            if msg.port >= 3:
                return b""  # a Uno has ports 0-2
            if not msg.enable:
                self.reporting_ports.discard(msg.port)
                return b""
            # StandardFirmata's reportDigitalCallback() answers with the port's inputs at once.
            self.reporting_ports.add(msg.port)
            mask = self.port_mask(msg.port)
            self._sent_ports[msg.port] = mask
            return fm.encode(fm.DigitalPort(msg.port, mask))
        if isinstance(msg, fm.Sysex):
            if msg.command == fm.REPORT_FIRMWARE:
                return fm.encode(fm.firmware_report(*self.version, self.firmware_name))
            if msg.command == fm.CAPABILITY_QUERY:
                return fm.encode(fm.capability_response(self.caps))
            if msg.command == fm.ANALOG_MAPPING_QUERY:
                return fm.encode(
                    fm.analog_mapping_response(tuple(p - 14 if p >= 14 else None for p in range(20)))
                )
            if msg.command == fm.PIN_STATE_QUERY and msg.data and msg.data[0] < 20:
                pin = msg.data[0]
                return fm.encode(fm.pin_state_response(pin, self.pin_modes[pin], self.pin_values[pin]))
            if msg.command == fm.SAMPLING_INTERVAL and len(msg.data) == 2:
                self.sampling_ms = max(1, msg.data[0] | msg.data[1] << 7)
        return b""

    def _stk_feed(self, data: bytes) -> bytes:
        self._stk_buf += data
        out = bytearray()
        while self._stk_buf and self.mode is Mode.BOOTLOADER:
            cmd = self._stk_buf[0]
            if cmd == stk500.PROG_PAGE:
                if len(self._stk_buf) < 4:
                    break
                need = 1 + 3 + int.from_bytes(self._stk_buf[1:3], "big") + 1
            else:
                # Optiboot answers a command it does not know like any other, after its terminator.
                need = 1 + _STK_ARGS.get(cmd, 0) + 1
            if len(self._stk_buf) < need:
                break
            frame = bytes(self._stk_buf[:need])
            del self._stk_buf[:need]
            if frame[-1] != stk500.CRC_EOP:
                # Optiboot's verifySpace(): a wrong terminator starts the watchdog, and the reset that
                # follows leaves the bootloader for the sketch (half-written or not).
                self.watchdog_resets += 1
                self._stk_buf.clear()
                self._reset_pins()
                out += self._boot_sketch()
                break
            self.stk_executed.append((cmd, frame[1:-1]))
            out += self._stk_command(cmd, frame[1:-1])
        return bytes(out)

    def _stk_command(self, cmd: int, args: bytes) -> bytes:
        ok = bytes([stk500.INSYNC])
        end = bytes([stk500.OK])
        if cmd == stk500.READ_SIGN:
            return ok + stk500.ATMEGA328P_SIGNATURE + end
        if cmd == stk500.GET_PARAMETER:
            return ok + bytes([{stk500.PARAM_SW_MAJOR: 8, stk500.PARAM_SW_MINOR: 0}.get(args[0], 3)]) + end
        if cmd == stk500.LOAD_ADDRESS:
            self._address = int.from_bytes(args, "little") * 2
            return ok + end
        if cmd == stk500.PROG_PAGE:
            length = int.from_bytes(args[:2], "big")
            page = args[3 : 3 + length]
            if self._address + length <= len(self.flash_mem) and length == len(page):
                self.flash_mem[self._address : self._address + length] = page
                self.pages_written += 1
                self.programming_interrupted = True
            return ok + end
        if cmd == stk500.READ_PAGE:
            length = int.from_bytes(args[:2], "big")
            return ok + bytes(self.flash_mem[self._address : self._address + length]) + end
        if cmd == stk500.LEAVE_PROGMODE:
            self.programming_interrupted = False
            # Optiboot answers, then the watchdog starts the sketch; the sketch's greeting follows.
            return ok + end + self._boot_sketch()
        return ok + end
