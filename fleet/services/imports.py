"""Bulk CSV import and export of devices and rooms: validate every row, then commit all or nothing."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.clock import Clock
from fleet.domain.enums import AiLabTier, DeviceStatus, Ownership, RoomKind
from fleet.domain.lifecycle import INITIAL_STATUSES
from fleet.domain.permissions import Permission, Principal
from fleet.errors import ImportRejected, InvalidInput
from fleet.persistence.models import Device, DeviceModel, DeviceTransition, Room, School
from fleet.services import audit
from fleet.services.common import require, scope_schools

DEVICE_COLUMNS = (
    "serial_number",
    "asset_tag",
    "vendor",
    "model_number",
    "school_code",
    "room",
    "status",
    "order_number",
    "purchase_date",
    "unit_cost",
    "funding_source",
    "ownership",
)
DEVICE_REQUIRED = ("serial_number", "asset_tag", "vendor", "model_number", "school_code")
ROOM_COLUMNS = ("school_code", "name", "kind", "tier", "capacity")
ROOM_REQUIRED = ("school_code", "name", "kind")
# Lengths match the database columns, so a long value is a row error, never a database error.
MAX_LEN = {
    "serial_number": 120,
    "asset_tag": 64,
    "vendor": 120,
    "model_number": 120,
    "school_code": 64,
    "room": 120,
    "order_number": 64,
    "funding_source": 120,
    "name": 120,
}
# One error list per import is capped: beyond this the file is clearly the wrong file.
MAX_REPORTED_ERRORS = 1000
# Rows are inserted in chunks so progress moves and statements stay under driver parameter limits.
CHUNK = 1000
MAX_UNIT_COST = Decimal("9999999999.99")

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    column: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class ImportResult:
    kind: str
    created: int
    dry_run: bool


def _read_csv(
    text: str, columns: tuple[str, ...], required: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, str]]]:
    if "\x00" in text:
        raise ImportRejected(
            "the file contains NUL bytes; is it a CSV file?",
            details=[RowError(1, None, "NUL byte in file").as_dict()],
        )
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    unknown = [h for h in header if h not in columns]
    if missing or unknown:
        errs = [RowError(1, c, "required column missing") for c in missing]
        errs += [RowError(1, c, f"unknown column; expected some of {', '.join(columns)}") for c in unknown]
        raise ImportRejected(
            "the header row does not match the import format", details=[e.as_dict() for e in errs]
        )
    reader.fieldnames = header
    for line_no, raw in enumerate(reader, start=2):
        if None in raw:
            yield line_no, {"__extra__": "1"}
            continue
        yield line_no, {k: (v or "").strip() for k, v in raw.items()}


def _check_text(
    row: dict[str, str], errors: list[RowError], line: int, names: Iterable[str], required: tuple[str, ...]
) -> None:
    for name in names:
        value = row.get(name, "")
        if name in required and not value:
            errors.append(RowError(line, name, "required value is empty"))
        elif len(value) > MAX_LEN.get(name, 120):
            errors.append(RowError(line, name, f"longer than {MAX_LEN.get(name, 120)} characters"))


async def import_devices(
    session: AsyncSession,
    principal: Principal,
    clock: Clock,
    text: str,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Validate every row; insert all of them in one transaction, or raise ImportRejected listing every bad row."""
    require(principal, Permission.MANAGE_DEVICES)
    rows = list(_read_csv(text, DEVICE_COLUMNS, DEVICE_REQUIRED))
    total = len(rows)
    if total == 0:
        raise ImportRejected("the file has a header but no rows", details=[])

    models = {(m.vendor, m.model_number): m for m in (await session.execute(select(DeviceModel))).scalars()}
    schools = {
        s.code: s
        for s in (await session.execute(scope_schools(select(School), principal, School.id))).scalars()
    }
    rooms = {
        (r.school_id, r.name): r.id
        for r in (
            await session.execute(
                select(Room).where(Room.school_id.in_([s.id for s in schools.values()] or [-1]))
            )
        ).scalars()
    }
    taken_tags = {
        r[0]
        for r in await _existing(
            session, (Device.asset_tag,), Device.asset_tag, [r.get("asset_tag", "") for _, r in rows]
        )
    }
    taken_serials = await _existing(
        session,
        (Device.vendor, Device.serial_number),
        Device.serial_number,
        [r.get("serial_number", "") for _, r in rows],
    )

    errors: list[RowError] = []
    seen_tags: dict[str, int] = {}
    seen_serials: dict[tuple[str, str], int] = {}
    values: list[dict[str, Any]] = []
    now = clock.now()
    for i, (line, row) in enumerate(rows):
        if "__extra__" in row:
            errors.append(RowError(line, None, "more fields than the header has"))
            continue
        before = len(errors)
        _check_text(
            row,
            errors,
            line,
            (
                "serial_number",
                "asset_tag",
                "vendor",
                "model_number",
                "school_code",
                "room",
                "order_number",
                "funding_source",
            ),
            DEVICE_REQUIRED,
        )
        model = models.get((row.get("vendor", ""), row.get("model_number", "")))
        if model is None and row.get("vendor") and row.get("model_number"):
            errors.append(
                RowError(
                    line,
                    "model_number",
                    f"no device model {row['vendor']} {row['model_number']} in the catalogue",
                )
            )
        school = schools.get(row.get("school_code", ""))
        if school is None and row.get("school_code"):
            errors.append(RowError(line, "school_code", f"unknown school code {row['school_code']!r}"))
        room_id = None
        if school is not None and row.get("room"):
            room_id = rooms.get((school.id, row["room"]))
            if room_id is None:
                errors.append(RowError(line, "room", f"school {school.code} has no room {row['room']!r}"))
        status = row.get("status") or DeviceStatus.RECEIVED.value
        if status not in {s.value for s in INITIAL_STATUSES}:
            errors.append(
                RowError(
                    line,
                    "status",
                    f"{status!r} is not an initial status "
                    f"({', '.join(sorted(s.value for s in INITIAL_STATUSES))})",
                )
            )
        ownership = row.get("ownership") or Ownership.OWNED.value
        if ownership not in {o.value for o in Ownership}:
            errors.append(RowError(line, "ownership", f"{ownership!r} is not owned or leased"))
        purchase = None
        if row.get("purchase_date"):
            try:
                purchase = date.fromisoformat(row["purchase_date"])
            except ValueError:
                errors.append(
                    RowError(line, "purchase_date", f"{row['purchase_date']!r} is not a date (YYYY-MM-DD)")
                )
        cost = None
        if row.get("unit_cost"):
            try:
                cost = Decimal(row["unit_cost"])
                if (
                    not cost.is_finite()
                    or cost < 0
                    or cost > MAX_UNIT_COST
                    or cost != cost.quantize(Decimal("0.01"))
                ):
                    raise InvalidOperation
            except InvalidOperation:
                errors.append(
                    RowError(
                        line,
                        "unit_cost",
                        f"{row['unit_cost']!r} is not an amount (0 to {MAX_UNIT_COST}, 2 decimals)",
                    )
                )
        tag = row.get("asset_tag", "")
        if tag:
            if tag in taken_tags:
                errors.append(RowError(line, "asset_tag", f"asset tag {tag!r} is already registered"))
            elif tag in seen_tags:
                errors.append(RowError(line, "asset_tag", f"asset tag {tag!r} repeats row {seen_tags[tag]}"))
            else:
                seen_tags[tag] = line
        vendor, serial = row.get("vendor", ""), row.get("serial_number", "")
        if serial and vendor:
            if (vendor, serial) in taken_serials:
                errors.append(
                    RowError(line, "serial_number", f"{vendor} serial {serial!r} is already registered")
                )
            elif (vendor, serial) in seen_serials:
                errors.append(
                    RowError(
                        line,
                        "serial_number",
                        f"{vendor} serial {serial!r} repeats row {seen_serials[(vendor, serial)]}",
                    )
                )
            else:
                seen_serials[(vendor, serial)] = line
        if len(errors) == before and model is not None and school is not None:
            values.append(
                {
                    "vendor": model.vendor,
                    "serial_number": serial,
                    "asset_tag": tag,
                    "model_id": model.id,
                    "school_id": school.id,
                    "room_id": room_id,
                    "status": status,
                    "order_number": row.get("order_number") or None,
                    "purchase_date": purchase,
                    "unit_cost": cost,
                    "funding_source": row.get("funding_source") or None,
                    "ownership": ownership,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        if progress and (i + 1) % CHUNK == 0:
            progress("validating", i + 1, total)
    if progress:
        progress("validating", total, total)
    if errors:
        raise ImportRejected(
            f"{len({e.row for e in errors})} of {total} rows are invalid; nothing was imported",
            details=[e.as_dict() for e in errors[:MAX_REPORTED_ERRORS]],
        )
    if dry_run:
        return ImportResult("devices", total, True)

    done = 0
    for start in range(0, total, CHUNK):
        chunk = values[start : start + CHUNK]
        ids = (
            (await session.execute(insert(Device).returning(Device.id, sort_by_parameter_order=True), chunk))
            .scalars()
            .all()
        )
        await session.execute(
            insert(DeviceTransition),
            [
                {
                    "device_id": dev_id,
                    "from_status": None,
                    "to_status": v["status"],
                    "actor": principal.actor,
                    "reason": "imported",
                    "at": now,
                }
                for dev_id, v in zip(ids, chunk, strict=True)
            ],
        )
        done += len(chunk)
        if progress:
            progress("inserting", done, total)
    school_ids = sorted({v["school_id"] for v in values})
    audit.record(
        session,
        principal=principal,
        at=now,
        action="import.devices",
        object_type="device",
        object_id=None,
        school_id=school_ids[0] if len(school_ids) == 1 else None,
        after={
            "created": total,
            "schools": school_ids,
            "first_asset_tag": values[0]["asset_tag"],
            "last_asset_tag": values[-1]["asset_tag"],
        },
        summary=f"imported {total} devices",
    )
    return ImportResult("devices", total, False)


async def _existing(
    session: AsyncSession, columns: tuple[Any, ...], key: Any, candidates: list[str]
) -> set[tuple[Any, ...]]:
    """Rows (of `columns`) whose `key` is among the candidates, queried in chunks."""
    found: set[tuple[Any, ...]] = set()
    unique = sorted(set(candidates))
    # SQLite allows 32,766 bound parameters per statement; stay well under.
    for start in range(0, len(unique), 5000):
        found |= {
            tuple(r)
            for r in (
                await session.execute(select(*columns).where(key.in_(unique[start : start + 5000])))
            ).all()
        }
    return found


async def import_rooms(
    session: AsyncSession,
    principal: Principal,
    clock: Clock,
    text: str,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    require(principal, Permission.MANAGE_ROOMS)
    rows = list(_read_csv(text, ROOM_COLUMNS, ROOM_REQUIRED))
    if not rows:
        raise ImportRejected("the file has a header but no rows", details=[])
    schools = {
        s.code: s
        for s in (await session.execute(scope_schools(select(School), principal, School.id))).scalars()
    }
    existing = {
        (r.school_id, r.name)
        for r in (
            await session.execute(
                select(Room).where(Room.school_id.in_([s.id for s in schools.values()] or [-1]))
            )
        ).scalars()
    }
    errors: list[RowError] = []
    seen: dict[tuple[int, str], int] = {}
    values: list[dict[str, Any]] = []
    now = clock.now()
    for line, row in rows:
        if "__extra__" in row:
            errors.append(RowError(line, None, "more fields than the header has"))
            continue
        before = len(errors)
        _check_text(row, errors, line, ("school_code", "name"), ROOM_REQUIRED)
        school = schools.get(row.get("school_code", ""))
        if school is None and row.get("school_code"):
            errors.append(RowError(line, "school_code", f"unknown school code {row['school_code']!r}"))
        kind, tier = row.get("kind", ""), row.get("tier") or None
        if kind not in {k.value for k in RoomKind}:
            errors.append(
                RowError(line, "kind", f"{kind!r} is not one of {', '.join(k.value for k in RoomKind)}")
            )
        elif kind == RoomKind.AI_LAB and tier not in {t.value for t in AiLabTier}:
            errors.append(
                RowError(line, "tier", f"an ai_lab needs a tier: {', '.join(t.value for t in AiLabTier)}")
            )
        elif kind != RoomKind.AI_LAB and tier is not None:
            errors.append(RowError(line, "tier", "only an ai_lab has a tier"))
        capacity = 0
        if row.get("capacity"):
            try:
                capacity = int(row["capacity"])
                if not 0 <= capacity <= 10000:
                    raise ValueError
            except ValueError:
                errors.append(
                    RowError(line, "capacity", f"{row['capacity']!r} is not a whole number 0-10000")
                )
        if school is not None and row.get("name"):
            key = (school.id, row["name"])
            if key in existing:
                errors.append(
                    RowError(line, "name", f"school {school.code} already has room {row['name']!r}")
                )
            elif key in seen:
                errors.append(RowError(line, "name", f"room {row['name']!r} repeats row {seen[key]}"))
            else:
                seen[key] = line
        if len(errors) == before and school is not None:
            values.append(
                {
                    "school_id": school.id,
                    "name": row["name"],
                    "kind": kind,
                    "tier": tier,
                    "capacity": capacity,
                    "created_at": now,
                }
            )
    if errors:
        raise ImportRejected(
            f"{len({e.row for e in errors})} of {len(rows)} rows are invalid; nothing was imported",
            details=[e.as_dict() for e in errors[:MAX_REPORTED_ERRORS]],
        )
    if dry_run:
        return ImportResult("rooms", len(rows), True)
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


async def export_devices(session: AsyncSession, principal: Principal, *, school_id: int | None = None) -> str:
    """Devices as CSV in the import format, so export -> import is lossless."""
    require(principal, Permission.READ_INVENTORY)
    stmt = (
        select(Device, DeviceModel.model_number, School.code, Room.name)
        .join(DeviceModel, DeviceModel.id == Device.model_id)
        .join(School, School.id == Device.school_id)
        .outerjoin(Room, Room.id == Device.room_id)
        .order_by(Device.id)
    )
    stmt = scope_schools(stmt, principal, Device.school_id)
    if school_id is not None:
        stmt = stmt.where(Device.school_id == school_id)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(DEVICE_COLUMNS)
    for dev, model_number, code, room in (await session.execute(stmt)).all():
        writer.writerow(
            [
                dev.serial_number,
                dev.asset_tag,
                dev.vendor,
                model_number,
                code,
                room or "",
                dev.status,
                dev.order_number or "",
                dev.purchase_date.isoformat() if dev.purchase_date else "",
                "" if dev.unit_cost is None else f"{dev.unit_cost:.2f}",
                dev.funding_source or "",
                dev.ownership,
            ]
        )
    return out.getvalue()


async def export_rooms(session: AsyncSession, principal: Principal, *, school_id: int | None = None) -> str:
    require(principal, Permission.READ_INVENTORY)
    stmt = select(Room, School.code).join(School, School.id == Room.school_id).order_by(Room.id)
    stmt = scope_schools(stmt, principal, Room.school_id)
    if school_id is not None:
        stmt = stmt.where(Room.school_id == school_id)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ROOM_COLUMNS)
    for room, code in (await session.execute(stmt)).all():
        writer.writerow([code, room.name, room.kind, room.tier or "", room.capacity])
    return out.getvalue()


def decode_upload(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InvalidInput(f"the file is not UTF-8 text (bad byte at offset {err.start})") from err
