"""The cockpit's live figures: online devices per school, read fresh from the database at most once a second
and shared by every viewer, so the count is right whichever process runs ingest (serve or `labfleet ingest`
workers) and 50 viewers cost one query a second, not fifty."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.domain.permissions import Permission, Principal
from fleet.persistence.models import Device
from fleet.persistence.models_mqtt import DeviceState
from fleet.services.common import require

# The 2-second budget from an MQTT event to the screen: ingest commits within ~50 ms, the feed re-reads at
# most every REFRESH_S, the stream pushes every PUSH_S; 0.5 + 1.0 leaves room for a busy loop.
REFRESH_S = 0.5
PUSH_S = 1.0


async def online_by_school(session: AsyncSession) -> dict[int, int]:
    rows = await session.execute(
        select(Device.school_id, func.count())
        .join(DeviceState, DeviceState.device_id == Device.id)
        .where(DeviceState.online.is_(True))
        .group_by(Device.school_id)
    )
    return {int(sid): int(n) for sid, n in rows.all()}


class OnlineFeed:
    """One cached read of online-per-school for the whole district; each viewer filters to its schools."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clock: Callable[[], float] = time.monotonic
    ):
        self._sessions = sessions
        self._clock = clock
        self._lock = asyncio.Lock()
        self._at = -1e9
        self._value: dict[int, int] = {}
        self.reads = 0

    async def _read(self) -> dict[int, int]:
        async with self._sessions() as session:
            return await online_by_school(session)

    async def get(self, principal: Principal) -> dict[int, int]:
        require(principal, Permission.READ_OPERATIONS)
        if self._clock() - self._at >= REFRESH_S:
            async with self._lock:
                if self._clock() - self._at >= REFRESH_S:
                    # Shielded: a viewer who leaves must not cancel the shared read half-way through.
                    self._value = await asyncio.shield(asyncio.ensure_future(self._read()))
                    self._at = self._clock()
                    self.reads += 1
        return {sid: n for sid, n in self._value.items() if principal.sees_school(sid)}
