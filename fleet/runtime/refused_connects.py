"""CONNECTs refused because a device's credentials are revoked: counted per device, cheaply.

The broker's auth check (`BrokerAuthority.authenticate`) runs per CONNECT on the event loop, so it only adds
to an in-memory counter; `flush` adds the counts to `device_credentials.refused_connects` at most once a
minute per device (the device plane calls it every FLUSH_INTERVAL_S and once more when it stops). Nothing is
logged: a device identity is not written to logs at the default level. Only identities that exist and are
revoked are counted, so the counter is bounded by the number of revoked credentials.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.persistence.models_mqtt import DeviceCredential

# One write per revoked device per minute at most: a revoked terminal retrying every second costs 1/60 of a
# write, and the yearly inspection needs no finer time than that.
FLUSH_INTERVAL_S = 60.0


class RefusedConnects:
    """Refused CONNECTs of revoked identities since the last flush."""

    def __init__(self) -> None:
        self._pending: Counter[str] = Counter()

    def note(self, identity: str) -> None:
        self._pending[identity] += 1

    @property
    def pending(self) -> int:
        return sum(self._pending.values())

    async def flush(self, sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
        """Add the counts to the database; returns the devices written. Counts are kept if the write fails."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, Counter()
        try:
            async with sessions() as s:
                for identity, n in sorted(batch.items()):
                    await s.execute(
                        update(DeviceCredential)
                        .where(DeviceCredential.username == identity)
                        .values(
                            refused_connects=DeviceCredential.refused_connects + n,
                            last_refused_at=now,
                        )
                    )
                await s.commit()
        except BaseException:
            self._pending.update(batch)  # tried again at the next flush
            raise
        return len(batch)
