"""API tokens over HTTP: list, create (the secret is shown once), revoke."""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime.

from typing import Any

from fastapi import APIRouter

from fleet.api import schemas as s
from fleet.api.deps import Caller, Cursor, Limit, Session, State
from fleet.api.routes.crud import ObjId
from fleet.services import tokens

router = APIRouter(prefix="/api/v1")


def _page(page: Any) -> dict[str, Any]:
    return {"items": page.items, "total": page.total, "next_cursor": page.next_cursor, "limit": page.limit}


@router.get(
    "/tokens", response_model=s.PageOut[s.TokenOut], tags=["tokens"], summary="List API tokens (admin)"
)
async def list_tokens(session: Session, caller: Caller, cursor: Cursor = None, limit: Limit = 100) -> Any:
    return _page(await tokens.list_tokens(session, caller, cursor=cursor, limit=limit))


@router.post(
    "/tokens",
    response_model=s.TokenCreatedOut,
    status_code=201,
    tags=["tokens"],
    summary="Create an API token; the secret is in this response only",
)
async def create_token(session: Session, caller: Caller, state: State, body: s.TokenIn) -> Any:
    row, plain = await tokens.create_token(
        session,
        principal=caller,
        at=state.clock.now(),
        name=body.name,
        role=body.role,
        school_ids=body.school_ids,
        district_wide=body.district_wide,
        expires_at=body.expires_at,
    )
    return {**s.TokenOut.model_validate(row).model_dump(), "token": plain}


@router.delete("/tokens/{obj_id}", response_model=s.TokenOut, tags=["tokens"], summary="Revoke an API token")
async def revoke_token(session: Session, caller: Caller, state: State, obj_id: ObjId) -> Any:
    return await tokens.revoke_token(session, caller, obj_id, state.clock.now())
