"""API tokens: created once, shown once, stored as a hash, scoped to a role and schools."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.enums import Role
from fleet.domain.permissions import Permission, Principal
from fleet.errors import InvalidInput, NotFound, Unauthenticated
from fleet.persistence.models import ApiToken, School
from fleet.services import audit
from fleet.services.common import Page, paginate, require

TOKEN_PREFIX = "lf_"
# 8 url-safe characters of public lookup id + 32 bytes of secret: lookups are indexed, guessing is hopeless.
_LOOKUP_LEN = 8
# last_used_at is kept to the minute: a token in constant use costs one UPDATE a minute, not one per request,
# and "unused for 90 days" needs nothing finer (the console's last_seen_at follows the same rule).
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_secret(secret: str) -> str:
    """SHA-256 is right here: tokens are 256-bit random, so no slow KDF is needed against guessing."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(token: str) -> tuple[str, str] | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    body = token[len(TOKEN_PREFIX) :]
    lookup, sep, secret = body.partition("_")
    if not sep or len(lookup) != _LOOKUP_LEN or not secret:
        return None
    return lookup, secret


async def create_token(
    session: AsyncSession,
    *,
    principal: Principal,
    at: datetime,
    name: str,
    role: Role,
    school_ids: list[int],
    district_wide: bool,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the plain token, which is never stored or shown again."""
    require(principal, Permission.MANAGE_TOKENS)
    if role == Role.ADMIN:
        district_wide = True
    if district_wide and school_ids:
        raise InvalidInput("a token is either district-wide or scoped to schools, not both")
    if not district_wide and not school_ids:
        raise InvalidInput("a school-scoped token needs at least one school (or make it district-wide)")
    if school_ids:
        found = set((await session.execute(select(School.id).where(School.id.in_(school_ids)))).scalars())
        missing = sorted(set(school_ids) - found)
        if missing:
            raise InvalidInput(f"unknown school ids: {missing}")
    lookup = secrets.token_hex(_LOOKUP_LEN // 2)
    secret = secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        prefix=lookup,
        secret_hash=hash_secret(secret),
        role=role,
        district_wide=district_wide,
        school_ids=sorted(set(school_ids)),
        created_at=at,
        expires_at=expires_at,
    )
    session.add(row)
    await session.flush()
    audit.record(
        session,
        principal=principal,
        at=at,
        action="token.create",
        object_type="api_token",
        object_id=row.id,
        after={"name": name, "role": str(role), "district_wide": district_wide, "school_ids": row.school_ids},
    )
    return row, f"{TOKEN_PREFIX}{lookup}_{secret}"


async def authenticate(session: AsyncSession, token: str, now: datetime) -> Principal:
    parts = _split(token)
    if parts is None:
        raise Unauthenticated("malformed API token")
    lookup, secret = parts
    row = (await session.execute(select(ApiToken).where(ApiToken.prefix == lookup))).scalar_one_or_none()
    if row is None or not hmac.compare_digest(row.secret_hash, hash_secret(secret)):
        raise Unauthenticated("unknown API token")
    if row.revoked_at is not None:
        raise Unauthenticated("API token revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthenticated("API token expired")
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now  # written with the request's commit: a request that fails does not count
    return principal_of(row)


def principal_of(row: ApiToken) -> Principal:
    return Principal(
        name=row.name,
        role=Role(row.role),
        district_wide=row.district_wide,
        school_ids=frozenset(int(s) for s in row.school_ids),
        token_id=row.id,
    )


async def list_tokens(
    session: AsyncSession, principal: Principal, *, cursor: str | None, limit: int
) -> Page[Any]:
    require(principal, Permission.MANAGE_TOKENS)
    return await paginate(session, select(ApiToken), ApiToken, cursor, limit)


async def revoke_token(session: AsyncSession, principal: Principal, token_id: int, at: datetime) -> ApiToken:
    require(principal, Permission.MANAGE_TOKENS)
    row = await session.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"api token {token_id} not found")
    if row.revoked_at is None:
        row.revoked_at = at
        audit.record(
            session,
            principal=principal,
            at=at,
            action="token.revoke",
            object_type="api_token",
            object_id=row.id,
            before={"revoked": False},
            after={"revoked": True},
        )
    return row
