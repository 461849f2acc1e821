"""Request dependencies: the app state, a unit of work, and the authenticated principal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleet.domain.clock import Clock
from fleet.domain.permissions import Principal
from fleet.errors import Unauthenticated
from fleet.services.common import MAX_PAGE_SIZE
from fleet.services.tokens import authenticate
from fleet.settings import Settings


@dataclass
class FleetState:
    """What the lifespan builds and hands to every request."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    extras: dict[str, Any]


def get_state(request: Request) -> FleetState:
    return request.app.state.fleet  # type: ignore[no-any-return]


State = Annotated[FleetState, Depends(get_state)]


async def get_session(state: State) -> AsyncIterator[AsyncSession]:
    """One transaction per request: commit when the handler returns, roll back when it raises."""
    async with state.sessions() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": commit before the response is sent, so a failed commit is the answer.
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="API token from `labfleet token create`")


async def get_principal(
    state: State, session: Session, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthenticated("an API token is required (Authorization: Bearer <token>)")
    return await authenticate(session, creds.credentials, state.clock.now())


Caller = Annotated[Principal, Depends(get_principal)]


def clock_of(state: State) -> Clock:
    return state.clock


Cursor = Annotated[str | None, Query(max_length=200, description="next_cursor from the previous page")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"page size, at most {MAX_PAGE_SIZE}")]
