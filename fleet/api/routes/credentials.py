"""A device's broker credentials over HTTP: rotate, revoke."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fleet.api.deps import Caller, Now, Plane, Session
from fleet.api.routes.params import ObjId
from fleet.api.schemas import UtcOut
from fleet.services import credentials

router = APIRouter(prefix="/api/v1")


class CredentialOut(BaseModel):
    device_id: int
    username: str
    rotated_at: UtcOut | None
    revoked_at: UtcOut | None
    password: str | None = Field(None, description="shown once, after rotation")


@router.post("/devices/{obj_id}/credentials/rotate", tags=["enrollment"])
async def rotate_credentials(
    obj_id: ObjId, caller: Caller, session: Session, clock: Now, plane: Plane
) -> CredentialOut:
    done = await credentials.rotate(session, caller, clock, obj_id, plane)
    cred = done.credential
    return CredentialOut(
        device_id=obj_id,
        username=cred.username,
        rotated_at=cred.rotated_at,
        revoked_at=cred.revoked_at,
        password=done.password,
    )


@router.post("/devices/{obj_id}/credentials/revoke", tags=["enrollment"])
async def revoke_credentials(
    obj_id: ObjId, caller: Caller, session: Session, clock: Now, plane: Plane
) -> CredentialOut:
    """Revoke a device's credentials; the broker disconnects it within seconds."""
    cred = await credentials.revoke(session, caller, clock, obj_id, plane)
    return CredentialOut(
        device_id=obj_id,
        username=cred.username,
        rotated_at=cred.rotated_at,
        revoked_at=cred.revoked_at,
        password=None,
    )
