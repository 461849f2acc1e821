"""The paced artifact download for terminals: signed links, the live-rollout check, byte ranges, and one
token bucket per school so all downloads at a school stay within its update budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fleet.domain.rollouts import TokenBucket


@dataclass
class SchoolPacer:
    """One token bucket per school, in real time: the sum of all downloads at a school stays within its
    budget."""

    burst_seconds: float
    monotonic: Callable[[], float] = time.monotonic
    buckets: dict[int, TokenBucket] = field(default_factory=dict)
    locks: dict[int, asyncio.Lock] = field(default_factory=dict)

    def bucket(self, school_id: int, rate: int) -> TokenBucket:
        b = self.buckets.get(school_id)
        if b is None or b.rate != rate:
            b = TokenBucket(rate=float(rate), burst=max(1.0, rate * self.burst_seconds))
            self.buckets[school_id] = b
        return b

    def forget(self, school_id: int) -> None:
        self.buckets.pop(school_id, None)

    async def acquire(self, school_id: int, rate: int, n: int) -> None:
        wait = self.bucket(school_id, rate).take(n, self.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
