"""Injectable clocks: services, jobs and simulators take a Clock instead of calling datetime.now()."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a monotonic scale, for timeouts and rates."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to; for tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 9, 7, 7, 55, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FakeClock.set needs an aware datetime")
        self._mono += (at - self._now).total_seconds()
        self._now = at


def as_utc(value: datetime) -> datetime:
    """A stored time, zone-aware: SQLite hands back naive datetimes for timezone=True columns; they are
    UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
