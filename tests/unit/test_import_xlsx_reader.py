"""The streaming XLSX reader (regular expressions over the sheet XML) reads what openpyxl reads."""

from __future__ import annotations

import io
import zipfile

import pytest
from openpyxl import Workbook

from fleet.services import import_files

TRICKY = [
    ["序列号", "资产编号", "品牌", "单价", "备注"],
    ["SN-1", 1001, "EduTech", 1299.5, "a&b <c> \"q\" 'x' 中文"],
    ["SN-2", 1002, None, 1299, "  spaced  "],
    ["SN-3", True, False, -0.5, "=1+2 as text"],
    [None, None, None, None, None],
    ["SN-5", "", "tab\there", 1e20, "line\nbreak"],
]


def _book(write_only: bool) -> bytes:
    wb = Workbook(write_only=write_only)
    ws = wb.create_sheet("delivery") if write_only else wb.active
    if not write_only:
        ws.title = "delivery"
    for row in TRICKY:
        ws.append(row)
    if not write_only:
        ws["H9"] = "far right"  # a gap of rows and of columns
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _fast(data: bytes) -> tuple[str, list[tuple[int, list[object]]]]:
    return import_files._fast_xlsx_rows(data, None)


def _canonical(rows: list[tuple[int, list[object]]]) -> list[tuple[int, list[str]]]:
    """Rows with trailing empty cells dropped and each value's type kept (1 and 1.0 and True differ); an empty
    text cell is an empty cell (both read as "")."""
    out = []
    for line, values in rows:
        cells = [None if v == "" else v for v in values]
        while cells and cells[-1] is None:
            cells.pop()
        if cells:
            out.append((line, [repr(c) for c in cells]))
    return out


def test_shared_and_inline_string_workbooks_read_as_openpyxl_reads_them() -> None:
    for write_only in (False, True):
        data = _book(write_only)
        title, rows = _fast(data)
        expected_title, expected = import_files._openpyxl_rows(data, None)
        assert title == expected_title == "delivery"
        assert _canonical(rows) == _canonical(expected)


def _sheet_xml(body: str, prefix: str = "") -> bytes:
    p = f"{prefix}:" if prefix else ""
    ns = f'xmlns{":" + prefix if prefix else ""}="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    return (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<{p}worksheet {ns}><{p}sheetData>{body}'
        f"</{p}sheetData></{p}worksheet>"
    ).encode()


def _package(sheet: bytes, prefix: str = "") -> bytes:
    p = f"{prefix}:" if prefix else ""
    ns = f'xmlns{":" + prefix if prefix else ""}="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(
            "[Content_Types].xml",
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
            "officedocument."
            'spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="'
            'application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>',
        )
        z.writestr(
            "_rels/.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        )
        z.writestr(
            "xl/workbook.xml",
            f'<{p}workbook {ns} xmlns:r="{rel}"><{p}sheets><{p}sheet name="S" sheetId="1" r:id="rId1"/>'
            f"</{p}sheets></{p}workbook>",
        )
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
            'worksheet" Target="worksheets/sheet1.xml"/></Relationships>',
        )
        z.writestr("xl/worksheets/sheet1.xml", sheet)
    return buf.getvalue()


def test_prefixed_elements_self_closing_cells_entities_and_rich_text_are_read() -> None:
    body = (
        '<x:row r="1"><x:c r="A1" t="inlineStr"><x:is><x:t>serial</x:t></x:is></x:c>'
        '<x:c r="B1" s="3"/><x:c r="C1" t="inlineStr"><x:is><x:r><x:t>rich </x:t></x:r><x:r><x:t>text</x:t>'
        "</x:r></x:is></x:c></x:row>"
        '<x:row r="3" spans="1:4"><x:c r="A3" t="str"><x:v>A&amp;B &#x4E2D;</x:v></x:c>'
        '<x:c r="D3"><x:f>1+1</x:f><x:v>2</x:v></x:c></x:row><x:row r="4"/>'
    )
    title, rows = _fast(_package(_sheet_xml(body, "x"), "x"))
    assert title == "S"
    assert rows == [(1, ["serial", None, "rich text"]), (3, ["A&B 中", None, None, 2]), (4, [])]


def test_rows_split_across_read_batches_are_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(import_files, "SHEET_BATCH_BYTES", 64)  # many batches, rows cut mid-element
    body = "".join(
        f'<row r="{i}"><c r="A{i}" t="inlineStr"><is><t>row {i}</t></is></c><c r="B{i}"><v>{i}</v></c></row>'
        for i in range(1, 200)
    )
    _title, rows = _fast(_package(_sheet_xml(body)))
    assert rows == [(i, [f"row {i}", i]) for i in range(1, 200)]


def test_a_sheet_with_cdata_is_read_by_openpyxl_instead() -> None:
    body = '<row r="1"><c r="A1" t="inlineStr"><is><t><![CDATA[</row>]]></t></is></c></row>'
    table = import_files.read_table(_package(_sheet_xml(body)), filename="x.xlsx")
    assert table.header == ["</row>"]
