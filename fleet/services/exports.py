"""Devices and rooms exported in the import format (CSV or XLSX), so export -> import is lossless."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain.permissions import Permission, Principal
from fleet.errors import InvalidInput
from fleet.i18n import _
from fleet.persistence.models import Device, DeviceModel, Room, School
from fleet.services import sheets
from fleet.services.common import require, scope_schools
from fleet.services.import_columns import DEVICE_COLUMNS, ROOM_COLUMNS

EXPORT_FORMATS = ("csv", "xlsx")


def _export_body(name: str, header: Sequence[str], rows: list[list[Any]], fmt: str, bom: bool) -> bytes:
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(_("format must be one of {formats}", formats=", ".join(EXPORT_FORMATS)))
    if fmt == "xlsx":
        return sheets.xlsx_bytes([(name, header, rows)])
    return sheets.csv_bytes(header, rows, bom=bom)


async def export_devices(
    session: AsyncSession,
    principal: Principal,
    *,
    school_id: int | None = None,
    fmt: str = "csv",
    bom: bool = False,
) -> bytes:
    """Devices in the import format (CSV or XLSX), so export -> import is lossless."""
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
    xlsx = fmt == "xlsx"
    rows = [
        [
            dev.serial_number,
            dev.asset_tag,
            dev.vendor,
            model_number,
            code,
            room or "",
            dev.status,
            dev.order_number or "",
            (dev.purchase_date if xlsx else dev.purchase_date.isoformat()) if dev.purchase_date else "",
            "" if dev.unit_cost is None else (dev.unit_cost if xlsx else f"{dev.unit_cost:.2f}"),
            dev.funding_source or "",
            dev.ownership,
        ]
        for dev, model_number, code, room in (await session.execute(stmt)).all()
    ]
    return _export_body("devices", DEVICE_COLUMNS, rows, fmt, bom)


async def export_rooms(
    session: AsyncSession,
    principal: Principal,
    *,
    school_id: int | None = None,
    fmt: str = "csv",
    bom: bool = False,
) -> bytes:
    require(principal, Permission.READ_INVENTORY)
    stmt = select(Room, School.code).join(School, School.id == Room.school_id).order_by(Room.id)
    stmt = scope_schools(stmt, principal, Room.school_id)
    if school_id is not None:
        stmt = stmt.where(Room.school_id == school_id)
    rows = [
        [code, room.name, room.kind, room.tier or "", room.capacity]
        for room, code in (await session.execute(stmt)).all()
    ]
    return _export_body("rooms", ROOM_COLUMNS, rows, fmt, bom)
