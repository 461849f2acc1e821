"""Every CSV and XLSX file LabFleet writes goes through here: formula-injection escaping and the BOM in one
place.

A spreadsheet runs a cell that begins with `=`, `+`, `-` or `@` as a formula (OWASP "CSV injection"), so a
device named `=HYPERLINK(...)` in an export would run on the procurement officer's machine. Such text cells
are written with a leading `'`, which Excel and LibreOffice show as plain text; the import strips it again
(`unescape`), so export -> import stays lossless. Numbers are written as numbers and never escaped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
BOM = "\ufeff"


def escape(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula gets a leading `'`; anything else is
    unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def unescape(text: str) -> str:
    """The inverse of `escape` for a text cell read back from one of our files."""
    if len(text) > 1 and text[0] == "'" and text[1] in "=+-@\t\r":
        return text[1:]
    return text


def csv_bytes(header: Sequence[Any] | None, rows: Iterable[Sequence[Any]], *, bom: bool) -> bytes:
    """UTF-8 CSV (with a BOM so Excel on Chinese Windows reads it as UTF-8 when `bom`), every cell escaped."""
    out = io.StringIO()
    if bom:
        out.write(BOM)
    w = csv.writer(out, lineterminator="\r\n" if bom else "\n")
    if header is not None:
        w.writerow([escape(h) for h in header])
    for row in rows:
        w.writerow(["" if v is None else escape(v) for v in row])
    return out.getvalue().encode()


def xlsx_bytes(
    sheets: Sequence[tuple[str, Sequence[str], Iterable[Sequence[Any]]]], *, widths: bool = True
) -> bytes:
    """A workbook of plain tables (title, header, rows): bold frozen header, autofilter, fitted widths."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    wb.remove(wb.active)
    bold = Font(bold=True)
    for title, header, rows in sheets:
        ws = wb.create_sheet(title[:31])
        ws.append([escape(h) for h in header])
        for c in ws[1]:
            c.font = bold
        fit = [display_width(h) for h in header]
        n = 0
        for row in rows:
            ws.append([escape(v) for v in row])
            n += 1
            if widths and n <= 2000:  # widths from the first rows: enough to fit, cheap on big sheets
                fit = [max(w, display_width(v)) for w, v in zip(fit, row, strict=False)]
        ws.freeze_panes = "A2"
        if header:
            ws.auto_filter.ref = f"A1:{get_column_letter(len(header))}{max(1, n + 1)}"
        for i, w in enumerate(fit, start=1):
            ws.column_dimensions[get_column_letter(i)].width = min(60, max(8, w + 2))
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def display_width(value: Any) -> int:
    """Columns a value takes in a spreadsheet: CJK characters are two wide."""
    if value is None:
        return 0
    text = value if isinstance(value, str) else str(value)
    return sum(2 if ord(ch) >= 0x1100 and _wide(ch) else 1 for ch in text)


def _wide(ch: str) -> bool:
    import unicodedata

    return unicodedata.east_asian_width(ch) in ("W", "F")
