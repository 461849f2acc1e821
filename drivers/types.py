"""Wire-independent values the device classes return."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Family(StrEnum):
    MICROPYTHON = "micropython"
    FIRMATA = "firmata"
    ROBOT = "robot"


class HealthStatus(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    FAULT = "fault"


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """Who the device is: `hardware_id` is stable across ports and replugs."""

    family: Family
    hardware_id: str
    model: str
    firmware_version: str
    details: tuple[tuple[str, str], ...] = ()

    def detail(self, key: str, default: str = "") -> str:
        return dict(self.details).get(key, default)


@dataclass(frozen=True, slots=True)
class Health:
    status: HealthStatus
    readings: tuple[tuple[str, float], ...]
    problems: tuple[str, ...] = ()

    def reading(self, key: str) -> float:
        return dict(self.readings)[key]


@dataclass(frozen=True, slots=True)
class ConfigResult:
    ok: bool
    keys: tuple[str, ...]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    """A firmware image (robot, firmata) or an application bundle (MicroPython: `files`)."""

    version: str
    data: bytes = b""
    sha256: str = ""
    files: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_bytes(cls, version: str, data: bytes) -> FirmwareImage:
        return cls(version, data, hashlib.sha256(data).hexdigest())

    @classmethod
    def bundle(cls, version: str, files: Mapping[str, bytes]) -> FirmwareImage:
        """An app bundle; its sha256 covers the sorted (path, file sha256) manifest."""
        items = tuple(sorted(files.items()))
        return cls(version, b"", bundle_digest(items), items)

    def verify(self) -> bool:
        """True if the image content matches its declared sha256."""
        if self.files:
            return bundle_digest(self.files) == self.sha256
        return hashlib.sha256(self.data).hexdigest() == self.sha256

    @property
    def size(self) -> int:
        return len(self.data) if not self.files else sum(len(b) for _, b in self.files)


def bundle_digest(files: tuple[tuple[str, bytes], ...]) -> str:
    h = hashlib.sha256()
    for path, blob in sorted(files):
        h.update(path.encode() + b"\x00" + hashlib.sha256(blob).hexdigest().encode() + b"\n")
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class FlashResult:
    ok: bool
    before: str
    after: str
    reason: str = ""
    resumed_from: int = 0
    bytes_sent: int = 0


@dataclass(frozen=True, slots=True)
class Progress:
    """Progress of a long operation: `done` of `total` units in `phase`."""

    phase: str
    done: int
    total: int


ProgressCallback = Callable[[Progress], None]


def _no_progress(_: Progress) -> None:
    return None


NO_PROGRESS: ProgressCallback = _no_progress


class Device(Protocol):
    """What every device class offers (one connection lifetime)."""

    family: Family

    async def identify(self) -> DeviceIdentity: ...

    async def read_health(self) -> Health: ...

    async def apply_config(self, config: Mapping[str, str]) -> ConfigResult: ...

    async def flash(self, image: FirmwareImage, progress: ProgressCallback = NO_PROGRESS) -> FlashResult: ...

    async def reboot(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Counters:
    """A snapshot of a session's counters (for logs and metrics at the seam)."""

    sent: int = 0
    received: int = 0
    retransmits: int = 0
    timeouts: int = 0
    rejected: Mapping[str, int] = field(default_factory=dict)
