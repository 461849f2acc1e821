"""The columns of an import file: the English names, the headers offices write for them, and a row's cells
found by column, with the helpers that name a bad cell as the reader sees it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fleet.i18n import _
from fleet.persistence.models import School
from fleet.services.import_cells import as_text
from fleet.services.import_files import Table, norm
from fleet.services.import_results import RowError

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


def row_cells(
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


class RowReader:
    """A file's rows as tuples of the wanted columns, in one pass: values normalised as `norm` does, text
    columns as text, "" for a column the file lacks; a row with values beyond the header is an error."""

    def __init__(
        self, table: Table, mapped: list[str | None], wanted: Sequence[str], texts: Sequence[str]
    ) -> None:
        self.table = table
        self.width = len(table.header)
        self.headers = {col: h for col, h in zip(mapped, table.header, strict=True) if col}
        where = {col: i for i, col in enumerate(mapped) if col}
        # A column the file lacks reads the padding cell just past the header.
        self.positions = [where.get(col, self.width) for col in wanted]
        self.is_text = [col in texts for col in wanted]

    def rows(self, errors: list[RowError]) -> list[tuple[int, tuple[Any, ...]]]:
        width, positions, is_text = self.width, self.positions, self.is_text
        pad = [""] * (width + 1)
        out: list[tuple[int, tuple[Any, ...]]] = []
        for line, raw in self.table.rows:
            n = len(raw)
            if n > width:
                if any(norm(v) != "" for v in raw[width:]):
                    errors.append(RowError(line, None, _("more fields than the header has")))
                    continue
                cells = raw[:width] + [""]
            else:
                cells = raw + pad[n:]
            values = []
            for at, text in zip(positions, is_text, strict=True):
                v = cells[at]
                # norm() inlined for plain ASCII text: this runs for every cell of the file.
                if type(v) is str:
                    v = v.strip() if v.isascii() else norm(v)
                else:
                    v = norm(v)
                    if text and type(v) is not str:
                        v = as_text(v)
                values.append(v)
            out.append((line, tuple(values)))
        return out


def cell_text(row: dict[str, Any], name: str) -> str:
    v = row.get(name, "")
    return v if isinstance(v, str) else as_text(v)


def add_error(
    errors: list[RowError], line: int, row: dict[str, Any], column: str, value: Any, reason: str
) -> None:
    errors.append(
        RowError(
            line, column, reason, "" if value is None else as_text(value), row["__headers__"].get(column)
        )
    )


def check_text(
    row: dict[str, Any], errors: list[RowError], line: int, names: Iterable[str], required: tuple[str, ...]
) -> None:
    for name in names:
        value = cell_text(row, name)
        row[name] = value
        if name in required and not value:
            add_error(errors, line, row, name, value, _("required value is empty"))
        elif len(value) > MAX_LEN.get(name, 120):
            add_error(
                errors, line, row, name, value, _("longer than {n} characters", n=MAX_LEN.get(name, 120))
            )


def school_finder(schools: Sequence[School]) -> Callable[[str], School | None | str]:
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
