"""Delivery files: every row checked against the catalogue, the schools in scope and the devices already
registered (`preview_devices`), then all rows inserted in one transaction or none (`import_devices`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import insert, literal, null, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain import timebounds
from fleet.domain.clock import Clock
from fleet.domain.enums import DeviceStatus, Ownership
from fleet.domain.lifecycle import INITIAL_STATUSES
from fleet.domain.permissions import Permission, Principal
from fleet.i18n import _
from fleet.persistence.bulk import among, dialect_of, insert_rows
from fleet.persistence.models import Device, DeviceModel, DeviceTransition, Room, School
from fleet.services import audit
from fleet.services.common import require, scope_schools
from fleet.services.import_cells import MAX_UNIT_COST_TEXT, as_text, code_lookup, parse_amount, parse_date
from fleet.services.import_columns import (
    DEVICE_COLUMNS,
    DEVICE_REQUIRED,
    MAX_LEN,
    RowReader,
    map_header,
    school_finder,
)
from fleet.services.import_files import gc_paused, norm, read_table
from fleet.services.import_results import (
    DEVICE_INSERT,
    DeviceRow,
    ImportResult,
    Preview,
    Progress,
    RowError,
    rejected,
)

# Rows are inserted in chunks so progress moves and statements stay under driver parameter limits.
CHUNK = 1000
# The columns in the order preview_devices unpacks them: texts first.
TEXT_COLUMNS = (
    "serial_number",
    "asset_tag",
    "vendor",
    "model_number",
    "school_code",
    "room",
    "order_number",
    "funding_source",
    "status",
    "ownership",
)
ROW_ORDER = (*TEXT_COLUMNS, "purchase_date", "unit_cost")
CHECKED_TEXT = TEXT_COLUMNS[:8]  # status and ownership are checked against their codes instead
OWNERSHIPS = frozenset(o.value for o in Ownership)
N_INSERT = len(DEVICE_INSERT)
INSERT_COLUMNS = (*DEVICE_INSERT, "created_at", "updated_at")
STATUS_OF = {s.value: s for s in DeviceStatus}
OWNERSHIP_OF = {o.value: o for o in Ownership}


class _RowChecks:
    """The per-value lookups of a delivery, each value parsed once: a delivery repeats its dates, prices,
    statuses and ownerships on every row."""

    def __init__(self, statuses: dict[str, str], ownerships: dict[str, str], latest: date) -> None:
        self.statuses, self.ownerships, self.latest = statuses, ownerships, latest
        self.initial = frozenset(s.value for s in INITIAL_STATUSES)
        self._dates: dict[tuple[type, Any], date | None] = {}
        self._amounts: dict[tuple[type, Any], Decimal | None] = {}

    def status(self, raw: str) -> str:
        return self.statuses.get(raw.lower(), raw) if raw else DeviceStatus.RECEIVED.value

    def ownership(self, raw: str) -> str:
        return self.ownerships.get(raw.lower(), raw) if raw else Ownership.OWNED.value

    def purchase_date(self, raw: Any) -> date | None:
        """The date, or None when the value is not one."""
        key = (type(raw), raw)
        if key not in self._dates:
            try:
                self._dates[key] = parse_date(raw)
            except (ValueError, OverflowError):
                self._dates[key] = None
        return self._dates[key]

    def amount(self, raw: Any) -> Decimal | None:
        """The amount, or None when the value is not one."""
        key = (type(raw), raw)
        if key not in self._amounts:
            try:
                self._amounts[key] = parse_amount(raw)
            except (InvalidOperation, ValueError):
                self._amounts[key] = None
        return self._amounts[key]


async def preview_devices(
    session: AsyncSession,
    principal: Principal,
    clock: Clock,
    source: bytes | str,
    *,
    filename: str | None = None,
    sheet: str | None = None,
    encoding: str | None = None,
    progress: Progress | None = None,
) -> Preview:
    """Read and check a delivery file without writing: typed rows and every error (reasons in the current
    locale).

    Raises InvalidInput only when the file cannot be read at all (encoding, damaged workbook, missing
    sheet)."""
    require(principal, Permission.MANAGE_DEVICES)
    with gc_paused():
        table = read_table(source, filename=filename, sheet=sheet, encoding=encoding)
    mapped, errors = map_header(table.header, DEVICE_COLUMNS, DEVICE_REQUIRED)
    columns = {c: h for c, h in zip(mapped, table.header, strict=True) if c}
    total = len(table.rows)
    if not table.header:
        errors.append(RowError(1, None, _("the file is empty")))
    elif total == 0:
        errors.append(RowError(2, None, _("the file has a header but no rows")))
    if errors:
        return Preview("devices", total, (), tuple(errors), table.encoding, table.sheet, columns)

    reader = RowReader(table, mapped, ROW_ORDER, TEXT_COLUMNS)
    with gc_paused():
        rows = reader.rows(errors)
    # The catalogue, schools and rooms as plain tuples: an ORM attribute read costs a call, ten per row.
    models = {
        (m.vendor.lower(), m.model_number.lower()): (m.id, m.vendor, m.model_number)
        for m in (await session.execute(select(DeviceModel))).scalars()
    }
    school_list = list((await session.execute(scope_schools(select(School), principal, School.id))).scalars())
    find_school = school_finder(school_list)
    rooms = {
        (r.school_id, norm(r.name).lower()): (r.id, r.name)
        for r in (
            await session.execute(select(Room).where(Room.school_id.in_([s.id for s in school_list] or [-1])))
        ).scalars()
    }
    taken_tags = {
        r[0] for r in await _existing(session, (Device.asset_tag,), Device.asset_tag, [v[1] for _, v in rows])
    }
    taken_serials = await _existing(
        session, (Device.vendor, Device.serial_number), Device.serial_number, [v[0] for _, v in rows]
    )
    with gc_paused():
        good = _check_rows(
            rows,
            reader.headers,
            _Known(models, find_school, rooms, taken_tags, taken_serials),
            errors,
            timebounds.latest_purchase(clock.now().date()),
            progress,
            total,
        )
    return Preview("devices", total, tuple(good), tuple(errors), table.encoding, table.sheet, columns)


@dataclass(frozen=True, slots=True)
class _Known:
    """What the database already holds, as plain values: an ORM attribute read costs a call, ten per row."""

    models: dict[tuple[str, str], tuple[int, str, str]]  # (vendor, model) lower case -> id, vendor, model
    find_school: Callable[[str], School | None | str]
    rooms: dict[tuple[int, str], tuple[int, str]]  # (school id, name lower case) -> id, name
    taken_tags: set[Any]
    taken_serials: set[tuple[Any, ...]]  # (vendor, serial)


def _check_rows(
    rows: list[tuple[int, tuple[Any, ...]]],
    headers: dict[str, str],
    known: _Known,
    errors: list[RowError],
    latest: date,
    progress: Progress | None,
    total: int,
) -> list[DeviceRow]:
    """Every row checked (errors appended in row order), and the good rows typed. Synchronous (no await), so
    the collector can stay paused over it."""
    checks = _RowChecks(statuses=code_lookup(DeviceStatus), ownerships=code_lookup(Ownership), latest=latest)
    models, find_school, rooms = known.models, known.find_school, known.rooms
    taken_tags, taken_serials = known.taken_tags, known.taken_serials
    text_checks = [
        (i, name, name in DEVICE_REQUIRED, MAX_LEN.get(name, 120)) for i, name in enumerate(CHECKED_TEXT)
    ]
    initial = checks.initial

    def err(line: int, column: str, value: Any, reason: str) -> None:
        errors.append(
            RowError(line, column, reason, "" if value is None else as_text(value), headers.get(column))
        )

    seen_tags: dict[str, int] = {}
    seen_serials: dict[tuple[str, str], int] = {}
    found_schools: dict[str, tuple[int, str] | str | None] = {}
    good: list[DeviceRow] = []
    for i, (line, values) in enumerate(rows):
        before = len(errors)
        for at, name, required, longest in text_checks:
            value = values[at]
            if not value:
                if required:
                    err(line, name, value, _("required value is empty"))
            elif len(value) > longest:
                err(line, name, value, _("longer than {n} characters", n=longest))
        (
            serial,
            tag,
            vendor,
            model_number,
            school_code,
            room_name,
            order_number,
            funding_source,
            raw_status,
            raw_own,
            raw_date,
            raw_cost,
        ) = values
        model = models.get((vendor.lower(), model_number.lower()))
        if model is None and vendor and model_number:
            err(
                line,
                "model_number",
                model_number,
                _("no device model {vendor} {model} in the catalogue", vendor=vendor, model=model_number),
            )
        school: tuple[int, str] | None = None  # id, code
        if school_code:
            if school_code in found_schools:
                found = found_schools[school_code]
            else:
                hit = find_school(school_code)
                found = found_schools[school_code] = (hit.id, hit.code) if isinstance(hit, School) else hit
            if found == "ambiguous":
                err(
                    line,
                    "school_code",
                    school_code,
                    _("two schools are named {name!r}; use the school code", name=school_code),
                )
            elif found is None:
                err(
                    line,
                    "school_code",
                    school_code,
                    _("no school with code or name {name!r}", name=school_code),
                )
            else:
                school = found  # type: ignore[assignment]  # neither None nor "ambiguous" here
        room: tuple[int, str] | None = None  # id, name
        if school is not None and room_name:
            room = rooms.get((school[0], room_name.lower()))
            if room is None:
                err(
                    line,
                    "room",
                    room_name,
                    _("school {school} has no room {room!r}", school=school[1], room=room_name),
                )
        status = checks.status(raw_status)
        if status not in initial:
            err(
                line,
                "status",
                raw_status,
                _(
                    "{value!r} is not a status a new device can have ({allowed})",
                    value=raw_status,
                    allowed=", ".join(sorted(initial)),
                ),
            )
        ownership = checks.ownership(raw_own)
        if ownership not in OWNERSHIPS:
            err(line, "ownership", raw_own, _("{value!r} is neither owned nor leased", value=raw_own))
        purchase = None
        if raw_date != "":
            purchase = checks.purchase_date(raw_date)
            if purchase is None:
                err(line, "purchase_date", raw_date, _("not a date (2025-09-01, 2025/9/1 or 2025年9月1日)"))
            elif not timebounds.EARLIEST_PURCHASE <= purchase <= checks.latest:
                err(
                    line,
                    "purchase_date",
                    purchase.isoformat(),
                    _(
                        "a purchase date must be between {first} and {last} (a year ahead)",
                        first=timebounds.EARLIEST_PURCHASE.isoformat(),
                        last=checks.latest.isoformat(),
                    ),
                )
                purchase = None
        cost = None
        if raw_cost != "":
            cost = checks.amount(raw_cost)
            if cost is None:
                err(
                    line,
                    "unit_cost",
                    raw_cost,
                    _(
                        "not an amount (0 to {max}, at most 2 decimals; 1,299.00, ¥1299 and 1299元 are read)",
                        max=MAX_UNIT_COST_TEXT,
                    ),
                )
        if tag:
            if tag in taken_tags:
                err(line, "asset_tag", tag, _("asset tag {tag!r} is already registered", tag=tag))
            elif tag in seen_tags:
                err(
                    line,
                    "asset_tag",
                    tag,
                    _("asset tag {tag!r} repeats row {row}", tag=tag, row=seen_tags[tag]),
                )
            else:
                seen_tags[tag] = line
        vendor_key = model[1] if model is not None else vendor
        if serial and vendor:
            if (vendor_key, serial) in taken_serials:
                err(
                    line,
                    "serial_number",
                    serial,
                    _("{vendor} serial {serial!r} is already registered", vendor=vendor_key, serial=serial),
                )
            elif (vendor_key, serial) in seen_serials:
                err(
                    line,
                    "serial_number",
                    serial,
                    _(
                        "{vendor} serial {serial!r} repeats row {row}",
                        vendor=vendor_key,
                        serial=serial,
                        row=seen_serials[(vendor_key, serial)],
                    ),
                )
            else:
                seen_serials[(vendor_key, serial)] = line
        if len(errors) == before and model is not None and school is not None:
            good.append(
                DeviceRow(
                    vendor=model[1],
                    serial_number=serial,
                    asset_tag=tag,
                    model_id=model[0],
                    school_id=school[0],
                    room_id=room[0] if room is not None else None,
                    status=STATUS_OF[status],
                    order_number=order_number or None,
                    purchase_date=purchase,
                    unit_cost=cost,
                    funding_source=funding_source or None,
                    ownership=OWNERSHIP_OF[ownership],
                    row=line,
                    model_number=model[2],
                    school_code=school[1],
                    room=room[1] if room is not None else None,
                )
            )
        if progress and (i + 1) % CHUNK == 0:
            progress("validating", i + 1, total)
    if progress:
        progress("validating", total, total)
    return good


async def import_devices(
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
    """Validate every row; insert all of them in one transaction, or raise ImportRejected listing every bad
    row."""
    preview = await preview_devices(
        session,
        principal,
        clock,
        source,
        filename=filename,
        sheet=sheet,
        encoding=encoding,
        progress=progress,
    )
    if not preview.ok:
        raise rejected(preview)
    total = preview.total
    if dry_run:
        return ImportResult("devices", total, True)
    now = clock.now()
    rows: tuple[DeviceRow, ...] = preview.rows
    dialect = dialect_of(session)
    stamps = (now, now)
    done = 0
    for start in range(0, total, CHUNK):
        chunk = rows[start : start + CHUNK]
        # A plain executemany (RETURNING on SQLite makes SQLAlchemy send one statement per row), then each new
        # device's lifecycle row copied from it by one INSERT ... SELECT on the asset tags (unique): no
        # per-row parameters, no round trip for the ids.
        with gc_paused():
            values = [r[:N_INSERT] + stamps for r in chunk]
        await insert_rows(session, Device.__table__, INSERT_COLUMNS, values)
        await session.execute(
            insert(DeviceTransition.__table__).from_select(
                ["device_id", "from_status", "to_status", "actor", "reason", "at"],
                select(
                    Device.id,
                    null(),
                    Device.status,
                    literal(principal.actor, DeviceTransition.actor.type),
                    literal("imported", DeviceTransition.reason.type),
                    literal(now, DeviceTransition.at.type),
                )
                .where(among(Device.__table__.c.asset_tag, [r.asset_tag for r in chunk], dialect))
                .order_by(Device.id),
            )
        )
        done += len(chunk)
        if progress:
            progress("inserting", done, total)
    school_ids = sorted({r.school_id for r in rows})
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
            "first_asset_tag": rows[0].asset_tag,
            "last_asset_tag": rows[-1].asset_tag,
            "encoding": preview.encoding,
            "sheet": preview.sheet,
        },
        summary=f"imported {total} devices",
    )
    return ImportResult("devices", total, False)


async def _existing(
    session: AsyncSession, columns: tuple[Any, ...], key: Any, candidates: list[str]
) -> set[tuple[Any, ...]]:
    """Rows (of `columns`) whose `key` is among the candidates, in one query."""
    wanted = among(key, set(candidates), dialect_of(session))
    return {tuple(r) for r in (await session.execute(select(*columns).where(wanted))).all()}
