"""Fault injection on the line between a simulated device and the host.

All randomness comes from a seeded `random.Random`, so a failing run replays exactly.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from drivers.errors import LinkClosed
from drivers.links import Link


@dataclass
class FaultPlan:
    """What goes wrong on the line. Rates are per byte, in each direction."""

    byte_error_rate: float = 0.0
    drop_rate: float = 0.0
    # Seconds the device waits before each write: a slow device or a congested hub.
    delay: float = 0.0
    # Pull the cable once the device has received this many bytes (one shot).
    unplug_after_rx_bytes: int | None = None
    # Emulate a UART at this many baud (10 bits per byte) in both directions; None = pty speed.
    baud: int | None = None
    seed: int = 0


class FaultyLink(Link):
    """Wraps the device side of a link and damages the bytes crossing it."""

    def __init__(
        self,
        inner: Link,
        plan: FaultPlan,
        *,
        on_unplug: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.url = inner.url
        self.inner = inner
        self.plan = plan
        self._rng = rng or random.Random(plan.seed)
        self._on_unplug = on_unplug
        self.rx_bytes = 0
        self.corrupted = 0
        self.dropped = 0
        self._rx_free_at = 0.0
        self._tx_free_at = 0.0

    async def _pace(self, nbytes: int, direction: str) -> None:
        """Hold the bytes for as long as a real UART takes to shift them."""
        if not self.plan.baud:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        attr = "_rx_free_at" if direction == "rx" else "_tx_free_at"
        done = max(now, getattr(self, attr)) + nbytes * 10 / self.plan.baud
        setattr(self, attr, done)
        if done > now:
            await asyncio.sleep(done - now)

    def _damage(self, data: bytes) -> bytes:
        p_err, p_drop = self.plan.byte_error_rate, self.plan.drop_rate
        if not p_err and not p_drop:
            return data
        out = bytearray()
        rng = self._rng
        for byte in data:
            if p_drop and rng.random() < p_drop:
                self.dropped += 1
                continue
            if p_err and rng.random() < p_err:
                byte ^= rng.randrange(1, 256)  # never a no-op: the byte really changes
                self.corrupted += 1
            out.append(byte)
        return bytes(out)

    async def read(self) -> bytes:
        while True:
            data = await self.inner.read()
            limit = self.plan.unplug_after_rx_bytes
            if limit is not None and self.rx_bytes + len(data) >= limit:
                self.plan.unplug_after_rx_bytes = None
                self.rx_bytes += len(data)
                if self._on_unplug is not None:
                    self._on_unplug()
                raise LinkClosed("simulated unplug")
            self.rx_bytes += len(data)
            await self._pace(len(data), "rx")
            damaged = self._damage(data)
            if damaged:
                return damaged

    async def write(self, data: bytes) -> None:
        if self.plan.delay:
            await asyncio.sleep(self.plan.delay)
        await self._pace(len(data), "tx")
        damaged = self._damage(data)
        if damaged:
            await self.inner.write(damaged)

    async def aclose(self) -> None:
        await self.inner.aclose()
