"""A device's latest telemetry, presence and health over HTTP."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fleet.api.deps import Caller, Session
from fleet.api.routes.params import ObjId
from fleet.api.schemas import UtcOut
from fleet.services import device_state as device_states

router = APIRouter(prefix="/api/v1")


class DeviceStateOut(BaseModel):
    device_id: int
    online: bool
    online_changed_at: UtcOut | None
    last_seen_at: UtcOut | None
    health: str
    health_reasons: list[str]
    battery_pct: int | None
    charging: bool | None
    temperature_c: float | None
    storage_used_pct: float | None
    firmware_version: str | None
    app: str | None
    rssi_dbm: int | None
    bytes_up_total: int
    bytes_down_total: int
    last_seq: int
    messages_total: int
    duplicates_total: int
    signed_in: bool = Field(description="someone is signed in (only a pseudonym is stored, never shown)")


@router.get("/devices/{obj_id}/state", tags=["devices"])
async def device_state(obj_id: ObjId, caller: Caller, session: Session) -> DeviceStateOut:
    """Latest telemetry, presence and health of one device."""
    st = await device_states.get(session, caller, obj_id)
    if st is None:
        return DeviceStateOut(
            device_id=obj_id,
            online=False,
            online_changed_at=None,
            last_seen_at=None,
            health="unknown",
            health_reasons=[],
            battery_pct=None,
            charging=None,
            temperature_c=None,
            storage_used_pct=None,
            firmware_version=None,
            app=None,
            rssi_dbm=None,
            bytes_up_total=0,
            bytes_down_total=0,
            last_seq=0,
            messages_total=0,
            duplicates_total=0,
            signed_in=False,
        )
    return DeviceStateOut(
        device_id=obj_id,
        online=st.online,
        online_changed_at=st.online_changed_at,
        last_seen_at=st.last_seen_at,
        health=st.health,
        health_reasons=list(st.health_reasons or []),
        battery_pct=st.battery_pct,
        charging=st.charging,
        temperature_c=st.temperature_c,
        storage_used_pct=st.storage_used_pct,
        firmware_version=st.firmware_version,
        app=st.app,
        rssi_dbm=st.rssi_dbm,
        bytes_up_total=st.bytes_up_total,
        bytes_down_total=st.bytes_down_total,
        last_seq=st.last_seq,
        messages_total=st.messages_total,
        duplicates_total=st.duplicates_total,
        signed_in=st.session_pseudonym is not None,
    )
