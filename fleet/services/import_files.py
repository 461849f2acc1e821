"""Reading an upload into a header and rows: XLSX (streamed from its XML, openpyxl for anything unusual)
and CSV in UTF-8, UTF-8 with BOM or GB18030/GBK (detected, or forced); CRLF; tab-separated text."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from typing import Any

from fleet.errors import ImportRejected, InvalidInput
from fleet.i18n import _
from fleet.services.import_results import RowError

# An upload larger than this is not a delivery note; the API's body limit usually stops it first.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
ENCODINGS = ("utf-8-sig", "gb18030")


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
