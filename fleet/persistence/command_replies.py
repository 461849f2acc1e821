"""Acks and results for a correlation id the service never sent to that device: ingest keeps them as dead
letters (reason `unknown_correlation_id`) instead of accepting them silently.

A reply is known when its id names a command sent to that same device: a row of `device_commands`, or the
update command a rollout sent it (`rollout_devices.correlation_id`, for an edge agent that acks an update it
cannot run). A late or repeated reply to a known command is not refused: applying it is already a no-op.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.persistence.ingest_sqlite import IN_CHUNK
from fleet.persistence.models_mqtt import DeviceCommand
from fleet.persistence.models_rollouts import RolloutDevice


async def never_sent(session: AsyncSession, replies: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """Of these (correlation id, device id) pairs, the ones the service never sent."""
    cids = sorted({cid for cid, _dev in replies})
    known: set[tuple[str, int]] = set()
    for i in range(0, len(cids), IN_CHUNK):
        chunk = cids[i : i + IN_CHUNK]
        for table in (DeviceCommand, RolloutDevice):
            rows = await session.execute(
                select(table.correlation_id, table.device_id).where(table.correlation_id.in_(chunk))
            )
            known.update((str(cid), int(dev)) for cid, dev in rows)
    return replies - known
