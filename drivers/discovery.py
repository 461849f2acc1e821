"""USB serial port discovery, known-kit table, stable hardware identity and a hot-plug watcher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from drivers.types import Family

log = logging.getLogger(__name__)

# Poll the port list this often: a plug or unplug is seen within one interval plus the lister's
# own time (~10 ms on Linux sysfs), well inside the 2 s the bench promises technicians.
POLL_INTERVAL = 0.5


@dataclass(frozen=True, slots=True)
class PortInfo:
    """One serial port as the OS lists it. `device` changes across replugs; `hardware_id` does not."""

    device: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    manufacturer: str = ""
    product: str = ""
    location: str | None = None  # USB topology path (hub port), e.g. "1-1.3"

    @property
    def hardware_id(self) -> str:
        # The USB forms hold no ':': a Firmata kit is known by its port, so this string becomes its fleet
        # identity and MQTT username, and mosquitto's password file splits each line at the first ':'.
        if self.vid is not None and self.pid is not None:
            if self.serial_number:
                return f"usb-{self.vid:04x}-{self.pid:04x}-{self.serial_number}"
            if self.location:
                # Adapters without a serial number (CH340) are known by the hub port they sit in
                # until the device itself is identified (its unique id then becomes the key).
                return f"usbport-{self.vid:04x}-{self.pid:04x}-{self.location}"
        return f"path:{self.device}"

    @property
    def url(self) -> str:
        return f"serial://{self.device}"


@dataclass(frozen=True, slots=True)
class KitType:
    family: Family
    name: str
    # False for generic USB-UART chips found in many products: identify by probing.
    certain: bool = True


# VID/PID of the kits the district buys. Generic bridges (CP210x, CH340) are MicroPython-first
# because that is what the district's ESP32 kits ship with; `certain=False` makes the agent probe.
KNOWN_KITS: Mapping[tuple[int, int], KitType] = {
    (0x2341, 0x0043): KitType(Family.FIRMATA, "Arduino Uno R3"),
    (0x2341, 0x0001): KitType(Family.FIRMATA, "Arduino Uno"),
    (0x2341, 0x0042): KitType(Family.FIRMATA, "Arduino Mega 2560 R3"),
    (0x2A03, 0x0043): KitType(Family.FIRMATA, "Arduino Uno (arduino.org)"),
    (0x2341, 0x0058): KitType(Family.FIRMATA, "Arduino Nano Every"),
    (0x10C4, 0xEA60): KitType(Family.MICROPYTHON, "ESP32 DevKit (CP210x)", certain=False),
    (0x1A86, 0x7523): KitType(Family.MICROPYTHON, "ESP32 board (CH340)", certain=False),
    (0x303A, 0x1001): KitType(Family.MICROPYTHON, "ESP32-S3/C3 native USB"),
    (0x2E8A, 0x0005): KitType(Family.MICROPYTHON, "Raspberry Pi Pico (MicroPython)"),
    (0x0D28, 0x0204): KitType(Family.MICROPYTHON, "BBC micro:bit"),
    (0x1209, 0x000A): KitType(Family.ROBOT, "LabFleet EduBot"),
}


def classify(port: PortInfo, kits: Mapping[tuple[int, int], KitType] = KNOWN_KITS) -> KitType | None:
    if port.vid is None or port.pid is None:
        return None
    return kits.get((port.vid, port.pid))


def list_ports() -> list[PortInfo]:
    """The OS's serial ports through pyserial (blocking: call it in a worker thread)."""
    from serial.tools import list_ports as lp

    return [
        PortInfo(
            p.device,
            p.vid,
            p.pid,
            p.serial_number or None,
            p.manufacturer or "",
            p.product or "",
            p.location or None,
        )
        for p in lp.comports()
    ]


class PortEventKind(StrEnum):
    ATTACHED = "attached"
    DETACHED = "detached"
    MOVED = "moved"  # same hardware, new /dev path (replugged between two polls)


@dataclass(frozen=True, slots=True)
class PortEvent:
    kind: PortEventKind
    port: PortInfo
    kit: KitType | None


PortLister = Callable[[], Sequence[PortInfo]]


class PortWatcher:
    """Polls a port lister and reports what changed, keyed by hardware identity."""

    def __init__(
        self,
        lister: PortLister = list_ports,
        *,
        interval: float = POLL_INTERVAL,
        kits: Mapping[tuple[int, int], KitType] = KNOWN_KITS,
        only_known: bool = True,
    ) -> None:
        self._lister = lister
        self.interval = interval
        self._kits = kits
        self._only_known = only_known
        self.current: dict[str, PortInfo] = {}

    async def poll_once(self) -> list[PortEvent]:
        ports = await asyncio.to_thread(self._lister)
        seen: dict[str, PortInfo] = {}
        for port in ports:
            kit = classify(port, self._kits)
            if self._only_known and kit is None:
                continue
            seen[port.hardware_id] = port
        events: list[PortEvent] = []
        for hw_id, port in seen.items():
            old = self.current.get(hw_id)
            if old is None:
                events.append(PortEvent(PortEventKind.ATTACHED, port, classify(port, self._kits)))
            elif old.device != port.device:
                events.append(PortEvent(PortEventKind.MOVED, port, classify(port, self._kits)))
        for hw_id, port in self.current.items():
            if hw_id not in seen:
                events.append(PortEvent(PortEventKind.DETACHED, port, classify(port, self._kits)))
        self.current = seen
        for event in events:
            log.info("port %s: %s at %s", event.kind, event.port.hardware_id, event.port.device)
        return events

    def find(self, hardware_id: str) -> PortInfo | None:
        return self.current.get(hardware_id)

    async def lookup(self, hardware_id: str) -> PortInfo | None:
        """List ports now and return the one with this identity, without consuming watcher events."""
        ports = await asyncio.to_thread(self._lister)
        return next((p for p in ports if p.hardware_id == hardware_id), None)

    async def events(self) -> AsyncIterator[PortEvent]:
        """Poll forever, yielding changes; the caller's task owns the loop and cancels it."""
        while True:
            for event in await self.poll_once():
                yield event
            await asyncio.sleep(self.interval)
