"""What an import answers: the typed rows of a dry run, every bad cell named, and the error list as a file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

from fleet.domain.enums import DeviceStatus, Ownership
from fleet.errors import ImportRejected
from fleet.i18n import N_, _
from fleet.services import sheets

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class RowError:
    """One bad cell (or row, when column is None), named as the reader sees it; reason is already
    translated."""

    row: int
    column: str | None
    reason: str
    value: str = ""
    header: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "column": self.column,
            "header": self.header if self.header is not None else self.column,
            "value": self.value,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class ImportResult:
    kind: str
    created: int
    dry_run: bool


class DeviceRow(NamedTuple):
    """One valid delivery row as it would be stored: the devices columns first, in `DEVICE_INSERT` order,
    then what the reader wrote (line, model number, school code, room name).

    A named tuple rather than a frozen dataclass: a 10,000-row delivery builds 10,000 of them, and a
    tuple is built in a fraction of the time, and inserted as it is."""

    vendor: str
    serial_number: str
    asset_tag: str
    model_id: int
    school_id: int
    room_id: int | None
    status: DeviceStatus
    order_number: str | None
    purchase_date: date | None
    unit_cost: Decimal | None
    funding_source: str | None
    ownership: Ownership
    row: int
    model_number: str
    school_code: str
    room: str | None


# The devices columns a DeviceRow starts with (created_at and updated_at are the import's time).
DEVICE_INSERT = DeviceRow._fields[:12]


@dataclass(frozen=True, slots=True)
class Preview:
    """A dry run: how the file was read, its valid rows (typed) and every error."""

    kind: str
    total: int
    rows: tuple[Any, ...]
    errors: tuple[RowError, ...]
    encoding: str | None = None
    sheet: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # column -> the header as written in the file

    @property
    def ok(self) -> bool:
        return not self.errors and self.total > 0

    @property
    def bad_rows(self) -> int:
        return len({e.row for e in self.errors})


def rejected(preview: Preview) -> ImportRejected:
    """Every error of a rejected file, none left out, with the counts in the message."""
    first = preview.errors[0] if preview.errors else None
    if first is not None and first.row == 1 and first.column is not None:
        message = _("the header row does not match the import format")
    elif first is not None and first.column is None and preview.total == 0:
        message = first.reason
    else:
        message = _(
            "{bad} of {total} rows are invalid ({errors} errors); nothing was imported",
            bad=preview.bad_rows,
            total=preview.total,
            errors=len(preview.errors),
        )
    return ImportRejected(message, details=[e.as_dict() for e in preview.errors])


ERROR_HEADER = (N_("Row"), N_("Column"), N_("Value"), N_("Reason"))


def errors_csv(details: Sequence[dict[str, Any]], *, bom: bool = True) -> bytes:
    """The full error list of a rejected file as CSV (headers in the current locale), for download."""
    return sheets.csv_bytes(
        [_(h) for h in ERROR_HEADER],
        (
            [d["row"], d.get("header") or d.get("column") or "", d.get("value", ""), d["reason"]]
            for d in details
        ),
        bom=bom,
    )
