"""Cell values as offices write them: text from number cells, dates in every usual spelling and Excel
serials, amounts with separators and currency marks, enum codes by their names in either language."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from fleet.i18n import catalog
from fleet.i18n.labels import NAMES
from fleet.services import sheets

# Value synonyms beyond the codes and their names in both languages (the labels catalog).
VALUE_ALIASES: dict[str, str] = {
    "自购": "owned",
    "自有产权": "owned",
    "租用": "leased",
    "使用中": "in_service",
}
MAX_UNIT_COST = Decimal("9999999999.99")
MAX_UNIT_COST_TEXT = f"{MAX_UNIT_COST:,}"
# Excel's day 0 (its 1900 leap-year bug makes serials from March 1900 count from 30 December 1899).
EXCEL_EPOCH = date(1899, 12, 30)


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
