"""Console users: argon2 passwords, sign-in with lockout, server-side sessions, the first-admin setup link.

A signed-in user becomes the same `Principal` an API token would (role, schools), so every console action
goes through the services the API uses, with the same permission, scope and audit; the audit names the user.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.enums import Role
from fleet.domain.permissions import Permission, Principal
from fleet.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from fleet.i18n import N_
from fleet.persistence.models import School
from fleet.persistence.models_console import ConsoleSession, SetupToken, User
from fleet.services import audit
from fleet.services.common import require
from fleet.settings import ConsoleSettings

# argon2-cffi's defaults (RFC 9106 "low memory": 64 MiB, t=3): ~50 ms per sign-in on the dev machine.
_hasher = PasswordHasher()
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")
# Long enough that guessing is hopeless within the lockout limits; no composition rules (NIST 800-63B).
MIN_PASSWORD = 10
MAX_PASSWORD = 256  # argon2 hashes anything, but a megabyte password is a denial of service.
# A dummy hash verified when the username is unknown, so timing does not tell which usernames exist.
_DUMMY_HASH = _hasher.hash("labfleet-no-such-user")

# Why a sign-in failed, as the person reads it (the page translates these); one text for "no such user"
# and "wrong password", so usernames cannot be probed.
BAD_CREDENTIALS = N_("Wrong username or password.")
LOCKED = N_("Too many failed attempts: this account is locked for a while. Try again later.")
DISABLED = N_("This account is disabled. Ask an administrator.")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def token_hash(token: str) -> str:
    """Session and setup tokens are 256-bit random, so a plain SHA-256 is enough (no KDF needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def principal_of(user: User) -> Principal:
    return Principal(
        name=user.username,
        role=Role(user.role),
        district_wide=user.district_wide,
        school_ids=frozenset(int(s) for s in user.school_ids or []),
        user_id=user.id,
    )


def check_password_rules(password: str) -> str | None:
    """The reason a new password is refused (a message id), or None."""
    if len(password) < MIN_PASSWORD:
        return N_("At least 10 characters.")
    if len(password) > MAX_PASSWORD:
        return N_("At most 256 characters.")
    return None


async def _check_scope(session: AsyncSession, role: Role, school_ids: list[int], district_wide: bool) -> None:
    if role == Role.ADMIN and not district_wide:
        raise InvalidInput(
            "an administrator is district-wide", details=[{"field": "district_wide", "reason": "admin"}]
        )
    if district_wide and school_ids:
        raise InvalidInput(
            "a user is either district-wide or scoped to schools, not both",
            details=[{"field": "school_ids", "reason": "both"}],
        )
    if not district_wide and not school_ids:
        raise InvalidInput(
            "a school-scoped user needs at least one school",
            details=[{"field": "school_ids", "reason": "none"}],
        )
    if school_ids:
        found = set((await session.execute(select(School.id).where(School.id.in_(school_ids)))).scalars())
        missing = sorted(set(school_ids) - found)
        if missing:
            raise InvalidInput(
                f"unknown school ids: {missing}", details=[{"field": "school_ids", "reason": "unknown"}]
            )


async def create_user(
    session: AsyncSession,
    *,
    principal: Principal,
    at: datetime,
    username: str,
    password: str,
    role: Role,
    school_ids: list[int],
    district_wide: bool,
    locale: str | None = None,
) -> User:
    """Create a user (admins only: the same permission as creating API tokens)."""
    require(principal, Permission.MANAGE_TOKENS)
    if not USERNAME_RE.match(username):
        raise InvalidInput(
            "a username is 2-64 letters, digits or . _ @ -",
            details=[{"field": "username", "reason": "format"}],
        )
    if (reason := check_password_rules(password)) is not None:
        raise InvalidInput(reason, details=[{"field": "password", "reason": reason}])
    await _check_scope(session, role, school_ids, district_wide)
    if (await session.execute(select(User.id).where(User.username == username))).first() is not None:
        raise Conflict(f"username {username!r} is taken", details=[{"field": "username", "reason": "taken"}])
    user = User(
        username=username,
        password_hash=hash_password(password),
        role=str(role),
        district_wide=district_wide,
        school_ids=sorted(set(school_ids)),
        locale=locale,
        failed_logins=0,
        created_at=at,
    )
    session.add(user)
    await session.flush()
    audit.record(
        session,
        principal=principal,
        at=at,
        action="user.create",
        object_type="user",
        object_id=user.id,
        after={
            "username": username,
            "role": str(role),
            "district_wide": district_wide,
            "school_ids": user.school_ids,
        },
    )
    return user


async def count_users(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(User))).scalar_one())


async def list_users(session: AsyncSession, principal: Principal) -> list[User]:
    require(principal, Permission.MANAGE_TOKENS)
    return list((await session.execute(select(User).order_by(User.username).limit(1000))).scalars())


async def set_disabled(
    session: AsyncSession, principal: Principal, user_id: int, *, disabled: bool, at: datetime
) -> User:
    """Disable (or enable) a user; disabling ends every session of theirs at once."""
    require(principal, Permission.MANAGE_TOKENS)
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    if disabled and principal.user_id == user.id:
        raise InvalidInput("you cannot disable yourself", details=[{"field": "user", "reason": "self"}])
    before = user.disabled_at is not None
    user.disabled_at = at if disabled else None
    if disabled:
        await end_sessions(session, user.id, at)
    if before != disabled:
        audit.record(
            session,
            principal=principal,
            at=at,
            action="user.disable" if disabled else "user.enable",
            object_type="user",
            object_id=user.id,
            before={"disabled": before},
            after={"disabled": disabled},
        )
    return user


async def end_sessions(session: AsyncSession, user_id: int, at: datetime) -> None:
    await session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.user_id == user_id, ConsoleSession.ended_at.is_(None))
        .values(ended_at=at)
    )


async def set_locale(session: AsyncSession, user: User, locale: str | None) -> None:
    user.locale = locale


@dataclass(frozen=True, slots=True)
class SignedIn:
    user: User
    token: str  # the cookie value; only its hash is stored
    csrf: str


async def sign_in(
    session: AsyncSession, cfg: ConsoleSettings, *, username: str, password: str, now: datetime
) -> SignedIn:
    """Check the password (with lockout after repeated failures) and open a session.

    Raises Unauthenticated whose message is one of BAD_CREDENTIALS, LOCKED, DISABLED. A failed attempt's
    count is written even though the caller's transaction then rolls back: the caller commits it first."""
    user = (await session.execute(select(User).where(User.username == username[:64]))).scalar_one_or_none()
    if user is None:
        _verify(_DUMMY_HASH, password)
        raise Unauthenticated(BAD_CREDENTIALS)
    if user.locked_until is not None and user.locked_until > now:
        raise Unauthenticated(LOCKED)
    if not _verify(user.password_hash, password[:MAX_PASSWORD]):
        user.failed_logins += 1
        if user.failed_logins >= cfg.lockout_after:
            user.locked_until = now + timedelta(minutes=cfg.lockout_minutes)
            user.failed_logins = 0
        raise Unauthenticated(BAD_CREDENTIALS)
    if user.disabled_at is not None:
        raise Unauthenticated(DISABLED)
    user.failed_logins = 0
    user.locked_until = None
    user.last_sign_in_at = now
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return await open_session(session, cfg, user, now)


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def open_session(session: AsyncSession, cfg: ConsoleSettings, user: User, now: datetime) -> SignedIn:
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            token_hash=token_hash(token),
            user_id=user.id,
            csrf_token=csrf,
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(hours=cfg.session_max_hours),
        )
    )
    await session.flush()
    audit.record(
        session,
        principal=principal_of(user),
        at=now,
        action="user.sign_in",
        object_type="user",
        object_id=user.id,
    )
    return SignedIn(user=user, token=token, csrf=csrf)


@dataclass(frozen=True, slots=True)
class Current:
    user: User
    row: ConsoleSession
    principal: Principal


# Writing last_seen_at on every request would be a write per page view; once a minute is enough for idling.
_TOUCH_EVERY = timedelta(minutes=1)


async def current(session: AsyncSession, cfg: ConsoleSettings, token: str, now: datetime) -> Current:
    """The user behind a session cookie; Unauthenticated when it is unknown, ended, idle or expired."""
    row = (
        await session.execute(select(ConsoleSession).where(ConsoleSession.token_hash == token_hash(token)))
    ).scalar_one_or_none()
    if row is None or row.ended_at is not None or row.expires_at <= now:
        raise Unauthenticated("session ended")
    if now - row.last_seen_at > timedelta(minutes=cfg.session_idle_minutes):
        row.ended_at = now
        raise Unauthenticated("session idle too long")
    user = await session.get(User, row.user_id)
    if user is None or user.disabled_at is not None:
        raise Unauthenticated("user disabled")
    if now - row.last_seen_at >= _TOUCH_EVERY:
        row.last_seen_at = now
    return Current(user=user, row=row, principal=principal_of(user))


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


async def sign_out(session: AsyncSession, cur: Current, now: datetime) -> None:
    cur.row.ended_at = now
    audit.record(
        session,
        principal=cur.principal,
        at=now,
        action="user.sign_out",
        object_type="user",
        object_id=cur.user.id,
    )


# ---------------------------------------------------------------- first admin


async def create_setup_token(session: AsyncSession, cfg: ConsoleSettings, now: datetime) -> str | None:
    """A one-time first-admin token when there are no users yet (else None); older unused ones are voided."""
    if await count_users(session):
        return None
    await session.execute(update(SetupToken).where(SetupToken.used_at.is_(None)).values(used_at=now))
    token = secrets.token_urlsafe(32)
    session.add(
        SetupToken(
            token_hash=token_hash(token),
            created_at=now,
            expires_at=now + timedelta(minutes=cfg.setup_link_minutes),
        )
    )
    await session.flush()
    return token


async def check_setup_token(session: AsyncSession, token: str, now: datetime) -> SetupToken:
    row = (
        await session.execute(select(SetupToken).where(SetupToken.token_hash == token_hash(token[:200])))
    ).scalar_one_or_none()
    if row is None or row.used_at is not None or row.expires_at <= now or await count_users(session):
        raise NotFound("setup link unknown, used or expired")
    return row


async def complete_setup(
    session: AsyncSession, cfg: ConsoleSettings, *, token: str, username: str, password: str, now: datetime
) -> SignedIn:
    """Create the first administrator with a setup token (used up) and sign them in."""
    row = await check_setup_token(session, token, now)
    row.used_at = now
    setup = Principal(name="setup-link", role=Role.ADMIN, district_wide=True, school_ids=frozenset())
    user = await create_user(
        session,
        principal=setup,
        at=now,
        username=username,
        password=password,
        role=Role.ADMIN,
        school_ids=[],
        district_wide=True,
    )
    return await open_session(session, cfg, user, now)


def describe(user: User) -> dict[str, Any]:
    return {"username": user.username, "role": user.role, "district_wide": user.district_wide}
