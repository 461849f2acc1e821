"""A device's latest telemetry, presence and health, as the ingest path last stored them."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.permissions import Permission, Principal
from fleet.persistence.models_mqtt import DeviceState
from fleet.services.common import device_in_scope, require


async def get(session: AsyncSession, principal: Principal, device_id: int) -> DeviceState | None:
    """The stored state, or None when the device never sent anything."""
    require(principal, Permission.READ_OPERATIONS)
    await device_in_scope(session, principal, device_id)
    return await session.get(DeviceState, device_id)
