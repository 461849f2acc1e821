"""The simulated clock: simulated time runs `speed` times faster than the monotonic clock, from an anchor.

It satisfies the fleet's Clock protocol (`now()`, `monotonic()`), so a service under test can be given the
same clock and agree with the simulator on when the bell rings. CLOCK_MONOTONIC is system-wide on Linux, so
an anchor taken in one process means the same instant in another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any


@dataclass(frozen=True, slots=True)
class Anchor:
    sim_start: datetime  # aware UTC
    mono_start: float  # time.monotonic() at sim_start
    speed: float

    def to_json(self) -> dict[str, object]:
        return {"sim_start": self.sim_start.isoformat(), "mono_start": self.mono_start, "speed": self.speed}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Anchor:
        start = datetime.fromisoformat(str(data["sim_start"]))
        if start.tzinfo is None:
            raise ValueError("sim_start needs a time zone")
        speed = float(data["speed"])
        if not 0 < speed <= 3600:
            raise ValueError("speed must be in (0, 3600]")
        return cls(start.astimezone(UTC), float(data["mono_start"]), speed)


class SimClock:
    """Simulated time; re-anchorable (the service's copy is re-anchored when the simulation starts)."""

    def __init__(self, anchor: Anchor | None = None, mono: Callable[[], float] = time.monotonic) -> None:
        self._mono = mono
        self.set_anchor(anchor or Anchor(datetime.now(UTC), mono(), 1.0))

    @property
    def speed(self) -> float:
        return self.anchor.speed

    def set_anchor(self, anchor: Anchor) -> None:
        self.anchor = anchor
        self._epoch0 = anchor.sim_start.timestamp()  # now_ms is asked per message: no datetime on that path

    def now(self) -> datetime:
        a = self.anchor
        return a.sim_start + timedelta(seconds=(self._mono() - a.mono_start) * a.speed)

    def monotonic(self) -> float:
        a = self.anchor
        return (self._mono() - a.mono_start) * a.speed

    def now_ms(self) -> int:
        a = self.anchor
        return int((self._epoch0 + (self._mono() - a.mono_start) * a.speed) * 1000)

    def wall_of(self, sim: datetime) -> float:
        """The monotonic instant at which simulated time reaches `sim`."""
        a = self.anchor
        return a.mono_start + (sim - a.sim_start).total_seconds() / a.speed

    def delay_until(self, sim: datetime) -> float:
        """Real seconds from now until simulated time reaches `sim` (0 when already past)."""
        return max(0.0, self.wall_of(sim) - self._mono())

    def real(self, sim_seconds: float) -> float:
        return sim_seconds / self.anchor.speed
