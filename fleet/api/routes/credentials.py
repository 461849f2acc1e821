"""A device's broker credentials over HTTP: rotate, revoke; rotations delivered over MQTT."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from datetime import timedelta

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fleet.api.deps import Caller, Now, Plane, Session
from fleet.api.routes.params import ObjId, StrictIn
from fleet.api.schemas import UtcOut
from fleet.services import credential_rotation, credentials

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


class RotationIn(StrictIn):
    school_id: ObjId | None = Field(
        None, description="rotate this school's devices; omitted: every school (district-wide roles only)"
    )
    grace_hours: float = Field(
        credential_rotation.DEFAULT_GRACE.total_seconds() / 3600,
        ge=credential_rotation.MIN_GRACE.total_seconds() / 3600,
        le=credential_rotation.MAX_GRACE.total_seconds() / 3600,
        description="how long the old password keeps working when a device does not acknowledge",
    )


class RotationOut(BaseModel):
    batch_id: str = Field(description="follow it with GET /api/v1/commands/{batch_id}")
    devices: int = Field(description="devices whose rotation was queued")
    skipped: int = Field(description="devices with a rotation already under way")
    grace_hours: float


@router.post("/credential-rotations", status_code=202, tags=["enrollment"])
async def start_rotation(
    body: RotationIn, caller: Caller, session: Session, clock: Now, plane: Plane
) -> RotationOut:
    """Rotate device passwords over MQTT (docs/protocol-mqtt.md 8.1): each device gets its new password on
    its cmd topic; its old one stops when it acknowledges, or when the grace period ends."""
    grace = timedelta(hours=body.grace_hours)
    done = await credential_rotation.start(
        session, caller, clock, school_id=body.school_id, grace=grace, plane=plane
    )
    return RotationOut(
        batch_id=done.batch_id, devices=done.devices, skipped=done.skipped, grace_hours=body.grace_hours
    )
