"""What every simulated serial device shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from drivers.links import Link
from drivers.types import Family


@dataclass(frozen=True, slots=True)
class UsbIdentity:
    """How the device's USB-serial adapter presents itself to the host."""

    vid: int
    pid: int
    serial_number: str | None
    manufacturer: str = ""
    product: str = ""


class SimDevice(ABC):
    """A simulated device; its state (flash, files, slots) survives unplug and replug."""

    family: Family
    usb: UsbIdentity

    @abstractmethod
    async def serve(self, link: Link) -> None:
        """Talk to a host over `link` for one connection lifetime; return when the link closes."""
