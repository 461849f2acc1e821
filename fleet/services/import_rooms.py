"""Room lists: every row checked against the schools in scope and their rooms, then inserted all or none."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.clock import Clock
from fleet.domain.enums import AiLabTier, RoomKind
from fleet.domain.permissions import Permission, Principal
from fleet.i18n import _
from fleet.persistence.models import Room, School
from fleet.services import audit
from fleet.services.common import require, scope_schools
from fleet.services.import_cells import code_lookup
from fleet.services.import_columns import (
    ROOM_COLUMNS,
    ROOM_REQUIRED,
    add_error,
    check_text,
    map_header,
    row_cells,
    school_finder,
)
from fleet.services.import_devices import CHUNK
from fleet.services.import_files import read_table
from fleet.services.import_results import ImportResult, Preview, Progress, RowError, rejected


async def preview_rooms(
    session: AsyncSession,
    principal: Principal,
    clock: Clock,
    source: bytes | str,
    *,
    filename: str | None = None,
    sheet: str | None = None,
    encoding: str | None = None,
) -> Preview:
    require(principal, Permission.MANAGE_ROOMS)
    table = read_table(source, filename=filename, sheet=sheet, encoding=encoding)
    mapped, errors = map_header(table.header, ROOM_COLUMNS, ROOM_REQUIRED)
    columns = {c: h for c, h in zip(mapped, table.header, strict=True) if c}
    total = len(table.rows)
    if not table.header:
        errors.append(RowError(1, None, _("the file is empty")))
    elif total == 0:
        errors.append(RowError(2, None, _("the file has a header but no rows")))
    if errors:
        return Preview("rooms", total, (), tuple(errors), table.encoding, table.sheet, columns)
    school_list = list((await session.execute(scope_schools(select(School), principal, School.id))).scalars())
    find_school = school_finder(school_list)
    existing = {
        (r.school_id, r.name)
        for r in (
            await session.execute(select(Room).where(Room.school_id.in_([s.id for s in school_list] or [-1])))
        ).scalars()
    }
    kinds, tiers = code_lookup(RoomKind), code_lookup(AiLabTier)
    seen: dict[tuple[int, str], int] = {}
    good: list[dict[str, Any]] = []
    for line, row in row_cells(table, mapped, errors):
        before = len(errors)
        check_text(row, errors, line, ("school_code", "name", "kind", "tier", "capacity"), ROOM_REQUIRED)
        school: School | None = None
        if row["school_code"]:
            found = find_school(row["school_code"])
            if not isinstance(found, School):
                add_error(
                    errors,
                    line,
                    row,
                    "school_code",
                    row["school_code"],
                    _("two schools are named {name!r}; use the school code", name=row["school_code"])
                    if found == "ambiguous"
                    else _("no school with code or name {name!r}", name=row["school_code"]),
                )
            else:
                school = found
        kind = kinds.get(row["kind"].lower(), row["kind"])
        tier = tiers.get(row["tier"].lower(), row["tier"]) or None
        if kind not in {k.value for k in RoomKind}:
            if row["kind"]:
                add_error(
                    errors,
                    line,
                    row,
                    "kind",
                    row["kind"],
                    _(
                        "{value!r} is not one of {allowed}",
                        value=row["kind"],
                        allowed=", ".join(k.value for k in RoomKind),
                    ),
                )
        elif kind == RoomKind.AI_LAB and tier not in {t.value for t in AiLabTier}:
            add_error(
                errors,
                line,
                row,
                "tier",
                row["tier"],
                _("an AI lab needs a tier: {allowed}", allowed=", ".join(t.value for t in AiLabTier)),
            )
        elif kind != RoomKind.AI_LAB and tier is not None:
            add_error(errors, line, row, "tier", row["tier"], _("only an AI lab has a tier"))
        capacity = 0
        if row["capacity"]:
            try:
                capacity = int(Decimal(row["capacity"]))
                if Decimal(row["capacity"]) != capacity or not 0 <= capacity <= 10000:
                    raise ValueError
            except (ValueError, InvalidOperation):
                add_error(
                    errors, line, row, "capacity", row["capacity"], _("not a whole number from 0 to 10000")
                )
        if school is not None and row["name"]:
            key = (school.id, row["name"])
            if key in existing:
                add_error(
                    errors,
                    line,
                    row,
                    "name",
                    row["name"],
                    _("school {school} already has room {room!r}", school=school.code, room=row["name"]),
                )
            elif key in seen:
                add_error(
                    errors,
                    line,
                    row,
                    "name",
                    row["name"],
                    _("room {room!r} repeats row {row}", room=row["name"], row=seen[key]),
                )
            else:
                seen[key] = line
        if len(errors) == before and school is not None:
            good.append(
                {
                    "school_id": school.id,
                    "name": row["name"],
                    "kind": kind,
                    "tier": tier,
                    "capacity": capacity,
                }
            )
    return Preview("rooms", total, tuple(good), tuple(errors), table.encoding, table.sheet, columns)


async def import_rooms(
    session: AsyncSession,
    principal: Principal,
    clock: Clock,
    source: bytes | str,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    filename: str | None = None,
    sheet: str | None = None,
    encoding: str | None = None,
) -> ImportResult:
    preview = await preview_rooms(
        session, principal, clock, source, filename=filename, sheet=sheet, encoding=encoding
    )
    if not preview.ok:
        raise rejected(preview)
    if dry_run:
        return ImportResult("rooms", preview.total, True)
    now = clock.now()
    values = [dict(v, created_at=now) for v in preview.rows]
    for start in range(0, len(values), CHUNK):
        await session.execute(insert(Room), values[start : start + CHUNK])
        if progress:
            progress("inserting", min(start + CHUNK, len(values)), len(values))
    audit.record(
        session,
        principal=principal,
        at=now,
        action="import.rooms",
        object_type="room",
        object_id=None,
        after={"created": len(values)},
        summary=f"imported {len(values)} rooms",
    )
    return ImportResult("rooms", len(values), False)
