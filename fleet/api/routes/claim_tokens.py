"""Claim tokens over HTTP: issue, list and revoke a school's enrollment tokens."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from datetime import timedelta

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fleet.api.deps import Caller, Now, Session
from fleet.api.routes.params import ObjId, StrictIn
from fleet.api.schemas import UtcOut
from fleet.persistence.models_mqtt import ClaimToken
from fleet.services import claim_tokens, enrollment

router = APIRouter(prefix="/api/v1")


class ClaimTokenIn(StrictIn):
    max_uses: int = Field(1, ge=1, le=enrollment.MAX_TOKEN_USES)
    ttl_seconds: int = Field(7 * 86400, ge=60, le=int(enrollment.MAX_TOKEN_TTL.total_seconds()))
    allow_unknown: bool = False
    label: str = Field("", max_length=120)


class ClaimTokenOut(BaseModel):
    id: int
    school_id: int
    label: str
    max_uses: int
    uses: int
    allow_unknown: bool
    created_by: str
    created_at: UtcOut
    expires_at: UtcOut
    revoked_at: UtcOut | None
    token: str | None = Field(None, description="shown once, at creation")


def _token_out(row: ClaimToken, token: str | None = None) -> ClaimTokenOut:
    return ClaimTokenOut(
        id=row.id,
        school_id=row.school_id,
        label=row.label,
        max_uses=row.max_uses,
        uses=row.uses,
        allow_unknown=row.allow_unknown,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        token=token,
    )


@router.post("/schools/{obj_id}/claim-tokens", status_code=201, tags=["enrollment"])
async def create_claim_token(
    obj_id: ObjId, body: ClaimTokenIn, caller: Caller, session: Session, clock: Now
) -> ClaimTokenOut:
    """A claim token for terminals of one school; the token text is returned once."""
    spec = claim_tokens.ClaimTokenSpec(
        max_uses=body.max_uses,
        ttl=timedelta(seconds=body.ttl_seconds),
        allow_unknown=body.allow_unknown,
        label=body.label,
    )
    issued = await claim_tokens.create(session, caller, clock, obj_id, spec)
    return _token_out(issued.row, issued.token)


@router.get("/schools/{obj_id}/claim-tokens", tags=["enrollment"])
async def list_claim_tokens(obj_id: ObjId, caller: Caller, session: Session) -> list[ClaimTokenOut]:
    return [_token_out(r) for r in await claim_tokens.list_for_school(session, caller, obj_id)]


@router.post("/claim-tokens/{obj_id}/revoke", tags=["enrollment"])
async def revoke_claim_token(obj_id: ObjId, caller: Caller, session: Session, clock: Now) -> ClaimTokenOut:
    return _token_out(await claim_tokens.revoke(session, caller, clock, obj_id))
