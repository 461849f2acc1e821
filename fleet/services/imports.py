"""Bulk import and export of devices and rooms, from the files offices produce: validate every row, then
commit all or nothing.

Reading: XLSX (first sheet, or a named one) and CSV in UTF-8, UTF-8 with BOM or GB18030/GBK (detected, or
forced); CRLF; full-width digits and spaces (NFKC); Chinese headers and values; `1,299.00`, `¥1299`, `1299元`;
`2025-09-01`, `2025/9/1`, `2025年9月1日`, Excel serial dates and date cells. Every bad row is named
(row, column, value, reason in the reader's language) and none is left out; `errors_csv` writes the full list.

`preview_devices` is the dry run as typed values (the console shows it before the upload is committed);
`import_devices` commits, or raises ImportRejected with every error.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleet.domain import timebounds
from fleet.domain.clock import Clock
from fleet.domain.enums import AiLabTier, DeviceStatus, Ownership, RoomKind
from fleet.domain.lifecycle import INITIAL_STATUSES
from fleet.domain.permissions import Permission, Principal
from fleet.errors import ImportRejected, InvalidInput
from fleet.i18n import N_, _, catalog
from fleet.i18n.labels import NAMES
from fleet.persistence.models import Device, DeviceModel, DeviceTransition, Room, School
from fleet.services import audit, sheets
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
# Header aliases, compared after NFKC, lower case, spaces and a trailing "(unit)" removed: what offices write.
HEADER_ALIASES: dict[str, str] = {
    "serial": "serial_number",
    "serialnumber": "serial_number",
    "sn": "serial_number",
    "序列号": "serial_number",
    "设备序列号": "serial_number",
    "资产编号": "asset_tag",
    "资产标签": "asset_tag",
    "资产号": "asset_tag",
    "assettag": "asset_tag",
    "品牌": "vendor",
    "厂商": "vendor",
    "厂家": "vendor",
    "生产厂商": "vendor",
    "型号": "model_number",
    "设备型号": "model_number",
    "model": "model_number",
    "学校代码": "school_code",
    "学校编号": "school_code",
    "学校": "school_code",
    "学校名称": "school_code",
    "school": "school_code",
    "教室": "room",
    "房间": "room",
    "教室名称": "room",
    "状态": "status",
    "订单号": "order_number",
    "采购订单号": "order_number",
    "采购日期": "purchase_date",
    "购买日期": "purchase_date",
    "单价": "unit_cost",
    "价格": "unit_cost",
    "采购单价": "unit_cost",
    "资金来源": "funding_source",
    "经费来源": "funding_source",
    "所有权": "ownership",
    "产权": "ownership",
    # rooms
    "名称": "name",
    "类型": "kind",
    "教室类型": "kind",
    "等级": "tier",
    "级别": "tier",
    "容量": "capacity",
    "座位数": "capacity",
}
# Value synonyms beyond the codes and their names in both languages (the labels catalog).
VALUE_ALIASES: dict[str, str] = {
    "自购": "owned",
    "自有产权": "owned",
    "租用": "leased",
    "使用中": "in_service",
}
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
# Rows are inserted in chunks so progress moves and statements stay under driver parameter limits.
CHUNK = 1000
MAX_UNIT_COST = Decimal("9999999999.99")
MAX_UNIT_COST_TEXT = f"{MAX_UNIT_COST:,}"
# Excel's day 0 (its 1900 leap-year bug makes serials from March 1900 count from 30 December 1899).
EXCEL_EPOCH = date(1899, 12, 30)
# An upload larger than this is not a delivery note; the API's body limit usually stops it first.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
ENCODINGS = ("utf-8-sig", "gb18030")

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


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One valid delivery row as it would be stored."""

    row: int
    serial_number: str
    asset_tag: str
    vendor: str
    model_number: str
    model_id: int
    school_id: int
    school_code: str
    room: str | None
    room_id: int | None
    status: DeviceStatus
    order_number: str | None
    purchase_date: date | None
    unit_cost: Decimal | None
    funding_source: str | None
    ownership: Ownership


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


# --- reading the file
# ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Table:
    header: list[str]
    rows: list[tuple[int, list[Any]]]
    encoding: str | None = None
    sheet: str | None = None


def decode_upload(data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """(text, encoding): UTF-8 (with or without BOM) tried strictly first, then GB18030 (a superset of
    GBK)."""
    if encoding:
        enc = encoding.strip().lower().replace("_", "-")
        enc = {"utf8": "utf-8-sig", "utf-8": "utf-8-sig", "gbk": "gb18030", "gb2312": "gb18030"}.get(enc, enc)
        try:
            return data.decode(enc), enc
        except LookupError as err:
            raise InvalidInput(_("unknown encoding {name!r}", name=encoding)) from err
        except UnicodeDecodeError as err:
            raise InvalidInput(
                _(
                    "the file is not {name} text (bad byte at offset {offset})",
                    name=encoding,
                    offset=err.start,
                )
            ) from err
    for enc in ENCODINGS:
        try:
            return data.decode(enc), enc
        except UnicodeDecodeError:
            continue
    raise InvalidInput(
        _("the file is neither UTF-8 nor GB18030/GBK text; save it as CSV UTF-8 or as XLSX"),
        details={"encodings": list(ENCODINGS)},
    )


def norm(value: Any) -> Any:
    """A cell as compared: text NFKC-normalised (full-width digits, letters and spaces) and stripped."""
    if value is None:
        return ""
    if isinstance(value, str):
        if not value.isascii():
            value = unicodedata.normalize("NFKC", value)
        return value.strip()
    return value


def _csv_table(text: str) -> Table:
    if "\x00" in text:
        raise ImportRejected(
            _("the file contains NUL bytes; is it a CSV file?"),
            details=[RowError(1, None, _("NUL byte in file")).as_dict()],
        )
    text = text.lstrip("\ufeff")
    first = text[: text.find("\n")] if "\n" in text else text
    delimiter = "\t" if "\t" in first and "," not in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[tuple[int, list[Any]]] = []
    header: list[str] | None = None
    try:
        for raw in reader:
            if not raw or all(not c.strip() for c in raw):
                continue
            if header is None:
                header = [norm(h) for h in raw]
                continue
            rows.append((reader.line_num, raw))
    except csv.Error as err:
        # Malformed quoting, or a field over the csv module's limit (128 KiB): a bad file, not a server fault.
        raise ImportRejected(
            _("the file is not readable CSV near line {line}: {error}", line=reader.line_num, error=str(err)),
            details=[RowError(max(reader.line_num, 1), None, str(err)).as_dict()],
        ) from err
    return Table(header or [], rows)


_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PKG_REL_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
_COL = re.compile(r"[A-Z]+")


def _col_index(ref: str) -> int:
    n = 0
    for ch in ref:
        n = n * 26 + ord(ch) - 64
    return n - 1


class _NotPlainXlsx(Exception):
    """The streaming reader met something it does not read; openpyxl reads the file instead."""


def _fast_xlsx_rows(data: bytes, sheet: str | None) -> tuple[str, list[tuple[int, list[Any]]]]:
    """Rows of one sheet straight from the XML (stdlib expat): about 10x faster than openpyxl's reader.

    Cell types: shared and inline strings, numbers (int when whole), booleans, ISO dates; number formats are
    not read, so a date cell arrives as its serial and the date columns read serials."""
    import xml.etree.ElementTree as ET

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = set(z.namelist())
        book = ET.fromstring(z.read("xl/workbook.xml"))
        sheets_el = book.find(f"{_NS}sheets")
        if sheets_el is None:
            raise _NotPlainXlsx("no sheets")
        entries = [(el.get("name", ""), el.get(f"{_REL_NS}id", "")) for el in sheets_el]
        if not entries:
            raise _NotPlainXlsx("no sheets")
        if sheet is not None and sheet not in [n for n, _r in entries]:
            raise InvalidInput(
                _(
                    "the workbook has no sheet {name!r}; sheets: {names}",
                    name=sheet,
                    names=", ".join(n for n, _r in entries),
                ),
                details={"sheets": [n for n, _r in entries]},
            )
        title, rid = next((n, r) for n, r in entries if sheet is None or n == sheet)
        rels = ET.fromstring(z.read("xl/_rels/workbook.xml.rels"))
        target = next((el.get("Target", "") for el in rels if el.get("Id") == rid), "")
        path = target.lstrip("/") if target.startswith("/") else "xl/" + target
        if path not in names:
            raise _NotPlainXlsx(path)
        shared: list[str] = []
        if "xl/sharedStrings.xml" in names:
            for si in ET.fromstring(z.read("xl/sharedStrings.xml")).iter(f"{_NS}si"):
                t = si.find(f"{_NS}t")
                shared.append(
                    t.text or ""
                    if t is not None
                    else "".join(x.text or "" for x in si.iter(f"{_NS}t") if x.text)
                )
        rows: list[tuple[int, list[Any]]] = []
        with z.open(path) as fh:
            line = 0
            for _event, el in ET.iterparse(fh, events=("end",)):
                if el.tag != f"{_NS}row":
                    continue
                line = int(el.get("r") or line + 1)
                cells: list[Any] = []
                for c in el.iter(f"{_NS}c"):
                    ref = c.get("r")
                    if ref:
                        m = _COL.match(ref)
                        idx = _col_index(m.group()) if m else len(cells)
                        if idx > len(cells):
                            cells.extend([None] * (idx - len(cells)))
                    kind = c.get("t", "n")
                    v = c.find(f"{_NS}v")
                    text = v.text if v is not None else None
                    value: Any
                    if kind == "s":
                        value = shared[int(text)] if text is not None else None
                    elif kind == "inlineStr":
                        value = "".join(x.text or "" for x in c.iter(f"{_NS}t"))
                    elif kind in ("str", "e", "d"):
                        value = text
                    elif kind == "b":
                        value = text == "1"
                    elif text is None:
                        value = None
                    else:
                        num = float(text)
                        value = int(num) if num.is_integer() and abs(num) < 1e15 else num
                    cells.append(value)
                el.clear()
                rows.append((line, cells))
        return title, rows


def _xlsx_table(data: bytes, sheet: str | None) -> Table:
    try:
        title, raw_rows = _fast_xlsx_rows(data, sheet)
    except InvalidInput:
        raise
    except Exception:  # noqa: BLE001 - anything unusual (strict OOXML, odd parts): openpyxl reads it
        title, raw_rows = _openpyxl_rows(data, sheet)
    header: list[str] | None = None
    rows: list[tuple[int, list[Any]]] = []
    for line, values in raw_rows:
        if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
            continue
        if header is None:
            header = [str(norm(h)) if h is not None else "" for h in values]
            while header and not header[-1]:
                header.pop()
            continue
        cells = list(values)
        while len(cells) > len(header) and cells[-1] is None:
            cells.pop()
        rows.append((line, cells))
    return Table(header or [], rows, sheet=title)


def _openpyxl_rows(data: bytes, sheet: str | None) -> tuple[str, list[tuple[int, list[Any]]]]:
    from openpyxl import load_workbook

    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as err:  # a damaged workbook raises many kinds: one clear answer at this seam
        raise InvalidInput(_("the file is not a readable XLSX workbook ({error})", error=str(err))) from err
    try:
        names = wb.sheetnames
        if sheet is not None and sheet not in names:
            raise InvalidInput(
                _("the workbook has no sheet {name!r}; sheets: {names}", name=sheet, names=", ".join(names)),
                details={"sheets": names},
            )
        ws = wb[sheet] if sheet is not None else wb.worksheets[0]
        return ws.title, [
            (line, list(values)) for line, values in enumerate(ws.iter_rows(values_only=True), start=1)
        ]
    except InvalidInput:
        raise
    except Exception as err:
        raise InvalidInput(_("the file is not a readable XLSX workbook ({error})", error=str(err))) from err
    finally:
        wb.close()


def read_table(
    source: bytes | str, *, filename: str | None = None, sheet: str | None = None, encoding: str | None = None
) -> Table:
    """The header and rows of an upload, whatever it is: XLSX by content, otherwise CSV text."""
    if isinstance(source, str):
        return _csv_table(source)
    if len(source) > MAX_UPLOAD_BYTES:
        raise InvalidInput(_("the file is larger than {n} MB", n=MAX_UPLOAD_BYTES // (1024 * 1024)))
    if source.startswith(b"PK\x03\x04") or (filename or "").lower().endswith((".xlsx", ".xlsm")):
        return _xlsx_table(source, sheet)
    if source.startswith(b"\xd0\xcf\x11\xe0"):
        raise InvalidInput(_("old Excel .xls files are not read; save the sheet as .xlsx or CSV UTF-8"))
    text, enc = decode_upload(source, encoding)
    table = _csv_table(text)
    table.encoding = enc
    return table


def _header_key(text: str) -> str:
    key = re.sub(r"\([^)]*\)$", "", text.lower()).strip()
    return re.sub(r"[\s_\-]+", "", key)


def map_header(
    header: list[str], columns: tuple[str, ...], required: tuple[str, ...]
) -> tuple[list[str | None], list[RowError]]:
    """For each file column, the column it is (None: unknown); header errors name the file's own words."""
    lookup = {_header_key(c): c for c in columns} | {k: v for k, v in HEADER_ALIASES.items() if v in columns}
    mapped: list[str | None] = []
    errors: list[RowError] = []
    seen: dict[str, str] = {}
    for h in header:
        col = lookup.get(_header_key(h)) if h else None
        if col is None:
            mapped.append(None)
            if h:
                errors.append(
                    RowError(
                        1,
                        h,
                        _("unknown column; expected some of {columns}", columns=", ".join(columns)),
                        h,
                        h,
                    )
                )
            continue
        if col in seen:
            errors.append(
                RowError(1, col, _("column {col} appears twice ({a}, {b})", col=col, a=seen[col], b=h), h, h)
            )
            mapped.append(None)
            continue
        seen[col] = h
        mapped.append(col)
    for c in required:
        if c not in seen:
            errors.append(RowError(1, c, _("required column missing")))
    return mapped, errors


# --- reading values
# --------------------------------------------------------------------------------------------


def as_text(value: Any) -> str:
    """A text cell as a string; spreadsheet numbers in text columns (serials, codes) lose their '.0'."""
    if isinstance(value, str):
        return sheets.unescape(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == datetime.min.time() else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


_DATE = re.compile(
    r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
)
_COMPACT_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_SERIAL = re.compile(r"\d{1,5}(?:\.0+)?")


def parse_date(value: Any) -> date:
    """2025-09-01, 2025/9/1, 2025.9.1, 2025年9月1日, 20250901, an Excel serial (45901) or a date cell."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _serial(float(value))
    text = str(value)
    if m := _DATE.fullmatch(text):
        return date(int(m[1]), int(m[2]), int(m[3]))
    if m := _COMPACT_DATE.fullmatch(text):
        return date(int(m[1]), int(m[2]), int(m[3]))
    if _SERIAL.fullmatch(text):
        return _serial(float(text))
    raise ValueError(text)


def _serial(days: float) -> date:
    if not 1 <= days < 2958466 or not float(days).is_integer():  # 2958465 is 9999-12-31 in Excel
        raise ValueError(days)
    return EXCEL_EPOCH + timedelta(days=int(days))


_AMOUNT_NOISE = re.compile(r"^(?:¥|RMB|CNY)\s*|\s*(?:元|RMB|CNY)$", re.IGNORECASE)
_GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d*)?")


def parse_amount(value: Any) -> Decimal:
    """1299, 1299.5, 1,299.00, ¥1299, 1299元, RMB 1,299 or a number cell; two decimals at most, never
    negative."""
    if isinstance(value, bool):
        raise InvalidOperation
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(repr(value))
    else:
        text = _AMOUNT_NOISE.sub("", str(value)).strip()
        if "," in text:
            if not _GROUPED.fullmatch(text):
                raise InvalidOperation
            text = text.replace(",", "")
        amount = Decimal(text)
    if (
        not amount.is_finite()
        or amount < 0
        or amount > MAX_UNIT_COST
        or amount != amount.quantize(Decimal("0.01"))
    ):
        raise InvalidOperation
    return amount.quantize(Decimal("0.01"))


def code_lookup(enum: type[StrEnum]) -> dict[str, str]:
    """Every way a person writes a code of this enum: the code, its English and Chinese names, synonyms."""
    zh = catalog("zh_CN")
    out: dict[str, str] = {}
    for code, name in NAMES.get(enum, {}).items():
        for spelling in (code, name, zh.get(name, ""), code.replace("_", " ")):
            if spelling:
                out[spelling.lower()] = code
    for spelling, code in VALUE_ALIASES.items():
        if code in {m.value for m in enum}:
            out[spelling] = code
    return out


# --- devices
# ---------------------------------------------------------------------------------------------------


def _cells(
    table: Table, mapped: list[str | None], errors: list[RowError]
) -> Iterable[tuple[int, dict[str, Any]]]:
    width = len(table.header)
    headers = {col: h for col, h in zip(mapped, table.header, strict=True) if col}
    for line, raw in table.rows:
        if len(raw) > width and any(norm(v) != "" for v in raw[width:]):
            errors.append(RowError(line, None, _("more fields than the header has")))
            continue
        # Inlined norm() for the common case of plain ASCII text: this loop runs for every cell of the file.
        row = {
            col: (v.strip() if v.isascii() else norm(v)) if type(v) is str else norm(v)
            for col, v in zip(mapped, raw, strict=False)
            if col
        }
        row["__headers__"] = headers
        yield line, row


def _text(row: dict[str, Any], name: str) -> str:
    v = row.get(name, "")
    return v if isinstance(v, str) else as_text(v)


def _err(
    errors: list[RowError], line: int, row: dict[str, Any], column: str, value: Any, reason: str
) -> None:
    errors.append(
        RowError(
            line, column, reason, "" if value is None else as_text(value), row["__headers__"].get(column)
        )
    )


def _check_text(
    row: dict[str, Any], errors: list[RowError], line: int, names: Iterable[str], required: tuple[str, ...]
) -> None:
    for name in names:
        value = _text(row, name)
        row[name] = value
        if name in required and not value:
            _err(errors, line, row, name, value, _("required value is empty"))
        elif len(value) > MAX_LEN.get(name, 120):
            _err(errors, line, row, name, value, _("longer than {n} characters", n=MAX_LEN.get(name, 120)))


def _school_finder(schools: Sequence[School]) -> Callable[[str], School | None | str]:
    """A school by code, else by name; 'ambiguous' when two schools share the name."""
    by_code = {s.code: s for s in schools}
    by_code_ci = {s.code.lower(): s for s in schools}
    by_name: dict[str, School | str] = {}
    for s in schools:
        key = norm(s.name).lower()
        by_name[key] = "ambiguous" if key in by_name else s

    def find(text: str) -> School | None | str:
        return by_code.get(text) or by_code_ci.get(text.lower()) or by_name.get(text.lower())

    return find


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

    rows = list(_cells(table, mapped, errors))
    models = {
        (m.vendor.lower(), m.model_number.lower()): m
        for m in (await session.execute(select(DeviceModel))).scalars()
    }
    school_list = list((await session.execute(scope_schools(select(School), principal, School.id))).scalars())
    find_school = _school_finder(school_list)
    rooms = {
        (r.school_id, norm(r.name).lower()): r
        for r in (
            await session.execute(select(Room).where(Room.school_id.in_([s.id for s in school_list] or [-1])))
        ).scalars()
    }
    taken_tags = {
        r[0]
        for r in await _existing(
            session, (Device.asset_tag,), Device.asset_tag, [_text(r, "asset_tag") for _, r in rows]
        )
    }
    taken_serials = await _existing(
        session,
        (Device.vendor, Device.serial_number),
        Device.serial_number,
        [_text(r, "serial_number") for _, r in rows],
    )
    statuses = code_lookup(DeviceStatus)
    initial = {s.value for s in INITIAL_STATUSES}
    ownerships = code_lookup(Ownership)
    today = clock.now().date()
    latest = timebounds.latest_purchase(today)

    seen_tags: dict[str, int] = {}
    seen_serials: dict[tuple[str, str], int] = {}
    good: list[DeviceRow] = []
    for i, (line, row) in enumerate(rows):
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
        vendor, model_number = row["vendor"], row["model_number"]
        model = models.get((vendor.lower(), model_number.lower()))
        if model is None and vendor and model_number:
            _err(
                errors,
                line,
                row,
                "model_number",
                model_number,
                _("no device model {vendor} {model} in the catalogue", vendor=vendor, model=model_number),
            )
        school: School | None = None
        if row["school_code"]:
            found = find_school(row["school_code"])
            if found == "ambiguous":
                _err(
                    errors,
                    line,
                    row,
                    "school_code",
                    row["school_code"],
                    _("two schools are named {name!r}; use the school code", name=row["school_code"]),
                )
            elif found is None:
                _err(
                    errors,
                    line,
                    row,
                    "school_code",
                    row["school_code"],
                    _("no school with code or name {name!r}", name=row["school_code"]),
                )
            else:
                school = found  # type: ignore[assignment]  # neither None nor "ambiguous" here
        room: Room | None = None
        if school is not None and row["room"]:
            room = rooms.get((school.id, row["room"].lower()))
            if room is None:
                _err(
                    errors,
                    line,
                    row,
                    "room",
                    row["room"],
                    _("school {school} has no room {room!r}", school=school.code, room=row["room"]),
                )
        raw_status = _text(row, "status")
        status = statuses.get(raw_status.lower(), raw_status) if raw_status else DeviceStatus.RECEIVED.value
        if status not in initial:
            _err(
                errors,
                line,
                row,
                "status",
                raw_status,
                _(
                    "{value!r} is not a status a new device can have ({allowed})",
                    value=raw_status,
                    allowed=", ".join(sorted(initial)),
                ),
            )
        raw_own = _text(row, "ownership")
        ownership = ownerships.get(raw_own.lower(), raw_own) if raw_own else Ownership.OWNED.value
        if ownership not in {o.value for o in Ownership}:
            _err(
                errors,
                line,
                row,
                "ownership",
                raw_own,
                _("{value!r} is neither owned nor leased", value=raw_own),
            )
        purchase = None
        raw_date = row.get("purchase_date", "")
        if raw_date != "":
            try:
                purchase = parse_date(raw_date)
            except (ValueError, OverflowError):
                _err(
                    errors,
                    line,
                    row,
                    "purchase_date",
                    raw_date,
                    _("not a date (2025-09-01, 2025/9/1 or 2025年9月1日)"),
                )
            else:
                if not timebounds.EARLIEST_PURCHASE <= purchase <= latest:
                    _err(
                        errors,
                        line,
                        row,
                        "purchase_date",
                        purchase.isoformat(),
                        _(
                            "a purchase date must be between {first} and {last} (a year ahead)",
                            first=timebounds.EARLIEST_PURCHASE.isoformat(),
                            last=latest.isoformat(),
                        ),
                    )
                    purchase = None
        cost = None
        raw_cost = row.get("unit_cost", "")
        if raw_cost != "":
            try:
                cost = parse_amount(raw_cost)
            except (InvalidOperation, ValueError):
                _err(
                    errors,
                    line,
                    row,
                    "unit_cost",
                    raw_cost,
                    _(
                        "not an amount (0 to {max}, at most 2 decimals; 1,299.00, ¥1299 and 1299元 are read)",
                        max=MAX_UNIT_COST_TEXT,
                    ),
                )
        tag = row["asset_tag"]
        if tag:
            if tag in taken_tags:
                _err(
                    errors, line, row, "asset_tag", tag, _("asset tag {tag!r} is already registered", tag=tag)
                )
            elif tag in seen_tags:
                _err(
                    errors,
                    line,
                    row,
                    "asset_tag",
                    tag,
                    _("asset tag {tag!r} repeats row {row}", tag=tag, row=seen_tags[tag]),
                )
            else:
                seen_tags[tag] = line
        serial = row["serial_number"]
        vendor_key = model.vendor if model is not None else vendor
        if serial and vendor:
            if (vendor_key, serial) in taken_serials:
                _err(
                    errors,
                    line,
                    row,
                    "serial_number",
                    serial,
                    _("{vendor} serial {serial!r} is already registered", vendor=vendor_key, serial=serial),
                )
            elif (vendor_key, serial) in seen_serials:
                _err(
                    errors,
                    line,
                    row,
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
                    row=line,
                    serial_number=serial,
                    asset_tag=tag,
                    vendor=model.vendor,
                    model_number=model.model_number,
                    model_id=model.id,
                    school_id=school.id,
                    school_code=school.code,
                    room=room.name if room is not None else None,
                    room_id=room.id if room is not None else None,
                    status=DeviceStatus(status),
                    order_number=row["order_number"] or None,
                    purchase_date=purchase,
                    unit_cost=cost,
                    funding_source=row["funding_source"] or None,
                    ownership=Ownership(ownership),
                )
            )
        if progress and (i + 1) % CHUNK == 0:
            progress("validating", i + 1, total)
    if progress:
        progress("validating", total, total)
    return Preview("devices", total, tuple(good), tuple(errors), table.encoding, table.sheet, columns)


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
    values = [
        {
            "vendor": r.vendor,
            "serial_number": r.serial_number,
            "asset_tag": r.asset_tag,
            "model_id": r.model_id,
            "school_id": r.school_id,
            "room_id": r.room_id,
            "status": r.status.value,
            "order_number": r.order_number,
            "purchase_date": r.purchase_date,
            "unit_cost": r.unit_cost,
            "funding_source": r.funding_source,
            "ownership": r.ownership.value,
            "created_at": now,
            "updated_at": now,
        }
        for r in preview.rows
    ]
    done = 0
    for start in range(0, total, CHUNK):
        chunk = values[start : start + CHUNK]
        # A plain executemany, then the new ids by asset tag (unique): RETURNING on SQLite makes SQLAlchemy
        # send one statement per row, ten times slower through aiosqlite's thread hop.
        await session.execute(insert(Device.__table__), chunk)
        ids = dict(
            (
                await session.execute(
                    select(Device.asset_tag, Device.id).where(
                        Device.asset_tag.in_([v["asset_tag"] for v in chunk])
                    )
                )
            ).all()
        )
        await session.execute(
            insert(DeviceTransition.__table__),
            [
                {
                    "device_id": ids[v["asset_tag"]],
                    "from_status": None,
                    "to_status": v["status"],
                    "actor": principal.actor,
                    "reason": "imported",
                    "at": now,
                }
                for v in chunk
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
            "encoding": preview.encoding,
            "sheet": preview.sheet,
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


# --- rooms
# -----------------------------------------------------------------------------------------------------


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
    find_school = _school_finder(school_list)
    existing = {
        (r.school_id, r.name)
        for r in (
            await session.execute(select(Room).where(Room.school_id.in_([s.id for s in school_list] or [-1])))
        ).scalars()
    }
    kinds, tiers = code_lookup(RoomKind), code_lookup(AiLabTier)
    seen: dict[tuple[int, str], int] = {}
    good: list[dict[str, Any]] = []
    for line, row in _cells(table, mapped, errors):
        before = len(errors)
        _check_text(row, errors, line, ("school_code", "name", "kind", "tier", "capacity"), ROOM_REQUIRED)
        school: School | None = None
        if row["school_code"]:
            found = find_school(row["school_code"])
            if not isinstance(found, School):
                _err(
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
                _err(
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
            _err(
                errors,
                line,
                row,
                "tier",
                row["tier"],
                _("an AI lab needs a tier: {allowed}", allowed=", ".join(t.value for t in AiLabTier)),
            )
        elif kind != RoomKind.AI_LAB and tier is not None:
            _err(errors, line, row, "tier", row["tier"], _("only an AI lab has a tier"))
        capacity = 0
        if row["capacity"]:
            try:
                capacity = int(Decimal(row["capacity"]))
                if Decimal(row["capacity"]) != capacity or not 0 <= capacity <= 10000:
                    raise ValueError
            except (ValueError, InvalidOperation):
                _err(errors, line, row, "capacity", row["capacity"], _("not a whole number from 0 to 10000"))
        if school is not None and row["name"]:
            key = (school.id, row["name"])
            if key in existing:
                _err(
                    errors,
                    line,
                    row,
                    "name",
                    row["name"],
                    _("school {school} already has room {room!r}", school=school.code, room=row["name"]),
                )
            elif key in seen:
                _err(
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


# --- the error list and exports
# --------------------------------------------------------------------------------

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
