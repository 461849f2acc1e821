"""Report values: a report is a summary plus named sections of typed rows, whatever the output format."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, overload

# Cell kinds: renderers type cells by these (XLSX number formats, JSON numbers, HTML alignment).
Kind = Literal["text", "code", "int", "year", "float", "money", "percent", "date", "datetime", "bool"]

# A progress callback: (stage, done, total). The CLI draws it as a bar; the API ignores it.
Progress = Callable[[str, int, int], None]

CENT = Decimal("0.01")


@overload
def money(value: None) -> None: ...
@overload
def money(value: Decimal | float) -> Decimal: ...
def money(value: Decimal | float | None) -> Decimal | None:
    """Round to cents, half up, as an accountant would."""
    if value is None:
        return None
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def ratio(numerator: float | Decimal, denominator: float | Decimal, places: int = 4) -> float | None:
    """numerator / denominator rounded, or None when the denominator is zero."""
    if not denominator:
        return None
    return round(float(numerator) / float(denominator), places)


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    kind: Kind = "text"


@dataclass(frozen=True, slots=True)
class Chart:
    """A bar chart of one section: labels from one column, bars from one or more numeric columns."""

    label: str
    values: tuple[str, ...]
    title: str
    horizontal: bool = False
    # Only the first rows are drawn: a chart with hundreds of bars is unreadable on a printed page.
    max_bars: int = 25


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    title: str
    columns: tuple[Column, ...]
    rows: Sequence[tuple[Any, ...]]
    note: str = ""
    chart: Chart | None = None
    # A totals row (same columns; None where a sum means nothing), shown under the table in every format.
    totals: tuple[Any, ...] | None = None
    # A short title for the XLSX sheet when the title is longer than Excel's 31 characters.
    sheet: str = ""

    def index(self, key: str) -> int:
        for i, col in enumerate(self.columns):
            if col.key == key:
                return i
        raise KeyError(key)

    def dicts(self) -> list[dict[str, Any]]:
        keys = [c.key for c in self.columns]
        return [dict(zip(keys, row, strict=True)) for row in self.rows]


@dataclass(frozen=True, slots=True)
class SummaryItem:
    key: str
    label: str
    value: Any
    kind: Kind = "text"


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    title: str
    generated_at: datetime
    start: date
    end: date
    filters: dict[str, str]
    summary: tuple[SummaryItem, ...]
    sections: tuple[Section, ...]
    notes: tuple[str, ...] = field(default=())
    # For the running header of printed reports: the district(s) covered.
    district: str = ""

    def section(self, key: str) -> Section:
        for s in self.sections:
            if s.key == key:
                return s
        raise KeyError(key)

    def value(self, key: str) -> Any:
        for item in self.summary:
            if item.key == key:
                return item.value
        raise KeyError(key)
