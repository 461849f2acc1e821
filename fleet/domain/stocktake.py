"""Room stocktake, pure: what a scanned label names, the network's window, and what a count adds up to."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from fleet.domain.enums import DeviceStatus

# Longer than any asset tag (64) or serial number (120) in the inventory: a scanner that reads a whole
# paragraph (a wrong code, a web page's QR) is refused before it reaches a query.
MAX_CODE = 300
# The console URL a label carries: ".../devices/<id>", with or without host, query or fragment.
_DEVICE_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://[^/\s]+)?(?:/[^\s?#]*)?/devices/(\d{1,10})/?(?:[?#]\S*)?$")
# Devices a room is expected to hold: every one still in the school (not ordered, retired or lost).
COUNTED = frozenset(
    {DeviceStatus.RECEIVED, DeviceStatus.PROVISIONED, DeviceStatus.IN_SERVICE, DeviceStatus.IN_REPAIR}
)


class LineStatus(StrEnum):
    FOUND = "found"  # belongs here, and was scanned or reported from here in the window
    MISSING = "missing"  # belongs here, neither scanned nor heard from
    UNEXPECTED = "unexpected"  # scanned here, belongs elsewhere


class Resolution(StrEnum):
    MOVED_HERE = "moved_here"  # an unexpected device now belongs to this room
    MARKED_LOST = "marked_lost"  # a missing device went through the lifecycle to "lost"


class WindowChoice(StrEnum):
    TODAY = "today"
    SINCE_YESTERDAY = "since_yesterday"
    WEEK = "week"
    NONE = "none"  # count everything by hand


@dataclass(frozen=True, slots=True)
class ScanCode:
    """What a label or a typed entry names: a device id (from its console URL) or a tag/serial text."""

    device_id: int | None
    text: str


def parse_code(raw: str) -> ScanCode | None:
    """The device a scanned or typed code names; None for an empty or oversized one."""
    text = raw.strip()
    if not text or len(text) > MAX_CODE:
        return None
    m = _DEVICE_URL.match(text)
    if m:
        return ScanCode(int(m.group(1)), text)
    return ScanCode(None, text)


def window(choice: WindowChoice, now: datetime, timezone: str) -> tuple[datetime, datetime] | None:
    """The network window ending now, with days starting at midnight in the school's time zone."""
    if choice is WindowChoice.NONE:
        return None
    local = now.astimezone(ZoneInfo(timezone))
    midnight = datetime.combine(local.date(), time(), tzinfo=local.tzinfo)
    days_back = {WindowChoice.TODAY: 0, WindowChoice.SINCE_YESTERDAY: 1, WindowChoice.WEEK: 6}[choice]
    start = midnight - timedelta(days=days_back)
    return start.astimezone(now.tzinfo), now


@dataclass(frozen=True, slots=True)
class Tally:
    """A count's figures: found, missing, unexpected, then what was done about the differences."""

    expected: int
    found: int
    missing: int
    unexpected: int
    seen_by_network: int
    scanned: int
    moved: int
    lost: int

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__slots__}


def tally(lines: Iterable[tuple[str, bool, bool, str | None]]) -> Tally:
    """Lines as (status, seen by network, scanned, resolution)."""
    counts = dict.fromkeys(("found", "missing", "unexpected", "seen", "scanned", "moved", "lost"), 0)
    for status, seen, scanned, resolution in lines:
        counts[str(status)] += 1
        counts["seen"] += seen
        counts["scanned"] += scanned
        counts["moved"] += resolution == Resolution.MOVED_HERE
        counts["lost"] += resolution == Resolution.MARKED_LOST
    return Tally(
        expected=counts["found"] + counts["missing"],
        found=counts["found"],
        missing=counts["missing"],
        unexpected=counts["unexpected"],
        seen_by_network=counts["seen"],
        scanned=counts["scanned"],
        moved=counts["moved"],
        lost=counts["lost"],
    )
