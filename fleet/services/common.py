"""Pieces every service uses: scoped lookups, filters and cursor pagination."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, TypeVarTuple

from sqlalchemy import BigInteger, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.permissions import Permission, Principal
from fleet.errors import InvalidInput, NotFound, PermissionDenied
from fleet.persistence.models import Device, School

T = TypeVar("T")

# Hard cap on one page: a page of 500 devices is ~250 KB of JSON, enough for any table view.
MAX_PAGE_SIZE = 500

# The largest key a cursor may carry: the primary key's column range (a larger one would overflow the
# database's integer parameter and was never issued by this API).
MAX_INT_KEY = 2**31 - 1
MAX_BIGINT_KEY = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    total: int
    next_cursor: str | None
    limit: int


# A cursor is the last key of the previous page in decimal: what the OpenAPI pattern of every `cursor`
# parameter admits (at most 18 digits, so always below 2^63 - 1; empty is the first page) is exactly what
# decode_cursor accepts.
CURSOR_PATTERN = r"^(|0|[1-9][0-9]{0,17})$"
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(last_id: int) -> str:
    return str(last_id)


def decode_cursor(cursor: str | None, max_key: int = MAX_BIGINT_KEY) -> int:
    """The last key of the previous page; past the column's range it is the range's end (an empty page)."""
    if not cursor:
        return 0
    if not _CURSOR.fullmatch(cursor):
        raise InvalidInput("cursor is not one this API issued; start again without it")
    return min(int(cursor), max_key)


def key_range(column: Any) -> int:
    """The largest value an integer key column holds (BigInteger or Integer)."""
    return MAX_BIGINT_KEY if isinstance(column.type, BigInteger) else MAX_INT_KEY


async def paginate(
    session: AsyncSession,
    stmt: Select[Any],
    model: Any,
    cursor: str | None,
    limit: int,
    *,
    descending: bool = False,
) -> Page[Any]:
    """Keyset pagination on the primary key: stable under inserts, with a total count of the filter.
    `descending` pages from the newest key down (the cursor is then the last, smallest key seen)."""
    if limit < 1 or limit > MAX_PAGE_SIZE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    after = decode_cursor(cursor, key_range(model.id))
    total = (
        await session.execute(select(func.count()).select_from(stmt.order_by(None).subquery()))
    ).scalar_one()
    if descending:
        page = stmt.where(model.id < after) if cursor else stmt
        page = page.order_by(model.id.desc())
    else:
        page = stmt.where(model.id > after).order_by(model.id)
    rows = (await session.execute(page.limit(limit + 1))).scalars().all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        items=rows,
        total=total,
        next_cursor=encode_cursor(rows[-1].id) if more and rows else None,
        limit=limit,
    )


def require(principal: Principal, permission: Permission) -> None:
    if not principal.has(permission):
        raise PermissionDenied(f"role {principal.role} may not {permission.value.replace('_', ' ')}")


_Row = TypeVarTuple("_Row")


def scope_schools(stmt: Select[*_Row], principal: Principal, school_column: Any) -> Select[*_Row]:
    """Restrict a query to the principal's schools (no-op for district-wide principals)."""
    if principal.district_wide:
        return stmt
    return stmt.where(school_column.in_(sorted(principal.school_ids) or [-1]))


async def get_or_404(session: AsyncSession, model: Any, obj_id: int, what: str) -> Any:
    obj = await session.get(model, obj_id)
    if obj is None:
        raise NotFound(f"{what} {obj_id} not found")
    return obj


def check_school(principal: Principal, school_id: int | None, what: str, obj_id: Any) -> None:
    """Out of scope looks exactly like missing, so existence does not leak."""
    if not principal.sees_school(school_id):
        raise NotFound(f"{what} {obj_id} not found")


def snapshot(obj: Any, fields: Sequence[str]) -> dict[str, Any]:
    """A JSON-safe before/after summary of selected fields, for the audit log."""
    out: dict[str, Any] = {}
    for f in fields:
        v = getattr(obj, f)
        out[f] = v if v is None or isinstance(v, (int, str, bool, float)) else str(v)
    return out


async def school_in_scope(session: AsyncSession, principal: Principal, school_id: int) -> School:
    """The school, or NotFound when it is missing or outside the principal's schools."""
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound(f"school {school_id} not found")
    check_school(principal, school.id, "school", school_id)
    return school


async def device_in_scope(session: AsyncSession, principal: Principal, device_id: int) -> Device:
    """The device, or NotFound when it is missing or outside the principal's schools."""
    device = await session.get(Device, device_id)
    if device is None:
        raise NotFound(f"device {device_id} not found")
    check_school(principal, device.school_id, "device", device_id)
    return device
