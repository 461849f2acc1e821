"""Formats: XLSX opens with openpyxl with typed cells, frozen headers and a summary sheet; the PDF renders to
PNG with pdftoppm; the HTML has the expected structure, with or without matplotlib; CSV and JSON for
machines."""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import subprocess
import sys
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from tests.conftest import Api, need_external
from tests.reports.district import Fixture

RANGE = {"start": "2024-01-01", "end": "2025-12-31"}


async def fetch(api: Api, name: str, fmt: str, **params: Any) -> Any:
    return await api.client.get(
        f"/api/v1/reports/{name}", params={"format": fmt, **params}, headers=await api.admin()
    )


async def test_xlsx_has_a_summary_sheet_and_one_typed_sheet_per_section(rapi: Api, district: Fixture) -> None:
    r = await fetch(rapi, "budget", "xlsx", **RANGE, budget="5000")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert 'filename="budget-2024-01-01-2025-12-31.xlsx"' in r.headers["content-disposition"]
    wb = load_workbook(io.BytesIO(r.content))
    assert wb.sheetnames == [
        "Summary",
        "AI share",  # the short name of a title longer than Excel's 31 characters
        "Spend by funding source",
        "Spend by school",
        "Book value by funding source",
        "Book value by school",
        "Planned replacements",
        "Planned replacements per model",
    ]
    for ws in wb.worksheets:
        assert ws.freeze_panes == "A2", ws.title
    summary = {row[0]: row[1] for row in wb["Summary"].iter_rows(values_only=True) if row and row[0]}
    assert summary["Start"] == datetime(2024, 1, 1) and summary["End"] == datetime(2025, 12, 31)
    assert isinstance(summary["Generated at (UTC)"], datetime)
    assert summary["Book value on 2025-12-31"] == 1427.51
    book = wb["Book value by funding source"]
    assert [c.value for c in book[1]] == [
        "Funding source",
        "Owned devices",
        "Purchase cost",
        "Accumulated depreciation",
        "Written off (retired or lost)",
        "Book value",
    ]
    city = next(row for row in book.iter_rows(min_row=2) if row[0].value == "city")
    assert city[5].value == 506.67 and city[5].number_format == '"¥"#,##0.00'
    assert city[1].value == 3 and isinstance(city[1].value, int)
    years = wb["AI share"]
    y2025 = next(row for row in years.iter_rows(min_row=2) if row[0].value == 2025)
    assert y2025[5].value == 0.2 and y2025[5].number_format == "0.0%"
    assert y2025[7].value is True
    repl = wb["Planned replacements"]
    row = next(repl.iter_rows(min_row=2))
    assert row[5].value == datetime(2021, 1, 1) and row[5].number_format == "yyyy-mm-dd"
    assert row[6].value == datetime(2026, 1, 1)


class Outline(HTMLParser):
    """Collects the parts of the page the test checks."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.tables: dict[str, dict[str, Any]] = {}
        self.summary_keys: list[str] = []
        self.svgs = 0
        self.css_charts = 0
        self._table: str | None = None
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "title":
            self._in_title = True
        if tag == "section":
            self.sections.append(a.get("id") or "")
        if tag == "table" and a.get("data-section"):
            self._table = a["data-section"]
            self.tables[self._table] = {"headers": [], "rows": 0}
        if tag == "th" and self._table and a.get("data-key"):
            self.tables[self._table]["headers"].append(a["data-key"])
        if tag == "tr" and self._table and not a:
            self.tables[self._table]["rows"] += 1
        if tag == "tr" and a.get("data-key"):
            self.summary_keys.append(a["data-key"] or "")
        if tag == "svg":
            self.svgs += 1
        if tag == "figure" and "css-chart" in (a.get("class") or ""):
            self.css_charts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


async def test_html_is_a_printable_page_with_every_section(rapi: Api, district: Fixture) -> None:
    r = await fetch(rapi, "coverage", "html", start="2026-01-01", end="2026-06-30")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = Outline()
    page.feed(r.text)
    assert page.title == "Coverage against the plan"
    assert page.sections == [
        "summary",
        "section-plan",
        "section-by_school",
        "section-by_school_kind",
        "section-below_quota",
    ]
    # The header row plus one row per line: 4 plan metrics, 2 schools, 4 school x kind pairs, 1 room below
    # quota.
    assert {k: v["rows"] - 1 for k, v in page.tables.items()} == {
        "plan": 4,
        "by_school": 2,
        "by_school_kind": 4,
        "below_quota": 1,
    }
    assert page.tables["below_quota"]["headers"] == [
        "school_code",
        "room",
        "room_kind",
        "quota",
        "deployed",
        "shortfall",
    ]
    assert "rooms_below_quota" in page.summary_keys
    assert page.svgs == 2  # the plan and per-school charts, drawn by matplotlib
    assert "Jan 1, 2026 to Jun 30, 2026" in r.text and "Generated" in r.text


async def test_without_matplotlib_html_draws_plain_bars_and_pdf_says_how_to_install(
    rapi: Api, district: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for mod in ("matplotlib", "matplotlib.figure", "weasyprint", "fontTools", "fontTools.subset"):
        monkeypatch.setitem(sys.modules, mod, None)  # an install without the `reports` extra
    # Nor Chromium (with it, an English PDF needs nothing from the extra): WeasyPrint is the engine.
    monkeypatch.setenv("LABFLEET_REPORTS__PDF_ENGINE", "weasyprint")
    r = await fetch(rapi, "coverage", "html")
    page = Outline()
    page.feed(r.text)
    assert r.status_code == 200 and page.svgs == 0 and page.css_charts == 2
    r = await fetch(rapi, "coverage", "pdf")
    assert r.status_code == 501
    body = r.json()
    assert body["error"] == "feature_unavailable"
    assert "pip install 'labfleet[reports]'" in body["message"] and "format=html" in body["message"]


async def test_chromium_without_the_extra_refuses_a_chinese_pdf_with_the_install_hint(
    rapi: Api, district: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CJK face is embedded through fontTools (the `reports` extra): without it a zh-CN PDF is a 501
    that says what to install, never a 500."""
    for mod in ("fontTools", "fontTools.subset", "weasyprint"):
        monkeypatch.setitem(sys.modules, mod, None)
    monkeypatch.setenv("LABFLEET_REPORTS__PDF_ENGINE", "chromium")
    r = await fetch(rapi, "coverage", "pdf", lang="zh-CN")
    assert r.status_code == 501, r.text
    assert "labfleet[reports]" in r.json()["message"]


async def test_pdf_renders_to_png_with_pdftoppm(rapi: Api, district: Fixture, tmp_path: Path) -> None:
    if shutil.which("pdftoppm") is None:
        need_external("pdftoppm (Debian poppler-utils)")
    r = await fetch(rapi, "reliability", "pdf", start="2026-01-01", end="2026-06-30")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF")
    pdf = tmp_path / "reliability.pdf"
    pdf.write_bytes(r.content)
    if shutil.which("pdfinfo"):  # same package as pdftoppm
        info = await asyncio.to_thread(
            subprocess.run, ["pdfinfo", str(pdf)], capture_output=True, text=True, timeout=60, check=True
        )
        pages = int(next(line.split()[-1] for line in info.stdout.splitlines() if line.startswith("Pages:")))
        assert pages >= 2  # the summary, then the sections (wide ones on landscape pages)
    await asyncio.to_thread(
        subprocess.run,
        ["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "2", str(pdf), str(tmp_path / "page")],
        check=True,
        timeout=60,
    )
    pngs = sorted(tmp_path.glob("page-*.png"))
    assert len(pngs) == 2
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 2000  # a drawn page, not an empty one


async def test_csv_is_one_block_per_section_or_one_plain_table(rapi: Api, district: Fixture) -> None:
    r = await fetch(rapi, "utilisation", "csv", start="2026-06-01", end="2026-06-28")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.splitlines()
    assert lines[0] == "# Report,utilisation,Utilisation" and lines[1] == "# District,Fixture District"
    assert lines[2] == "# Covers,2026-06-01,2026-06-28"
    assert lines[3].startswith("# Generated,2026-09-07T07:55:00")
    assert [ln.split(",")[1] for ln in lines if ln.startswith("# Section")] == [
        "by_model",
        "by_room",
        "idle",
        "over_capacity",
        "by_device",
    ]
    r = await fetch(rapi, "utilisation", "csv", start="2026-06-01", end="2026-06-28", section="by_device")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["asset_tag"]: int(row["active_minutes"]) for row in table}["AT-a1"] == 160
    assert len(table) == 6


async def test_json_names_range_generation_time_and_filters(rapi: Api, district: Fixture) -> None:
    r = await fetch(rapi, "warranty", "json", school=district.school_a, start="2026-01-01", end="2026-06-30")
    body = r.json()
    assert body["range"] == {"start": "2026-01-01", "end": "2026-06-30"}
    assert body["generated_at"] == "2026-09-07T07:55:00+00:00"
    assert body["filters"] == {"school": f"School A (school-a, id {district.school_a})"}
    r = await fetch(rapi, "warranty", "json", section="expiring")
    assert [s["key"] for s in r.json()["sections"]] == ["expiring"]


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/api/v1/reports/nonsense?format=json", 404, "not_found"),
        ("/api/v1/reports/coverage?format=docx", 422, "invalid_input"),
        ("/api/v1/reports/coverage?start=2026-02-01&end=2026-01-01", 422, "invalid_input"),
        ("/api/v1/reports/coverage?start=2001-01-01&end=2026-01-01", 422, "invalid_input"),
        ("/api/v1/reports/coverage?start=yesterday", 422, "invalid_request"),
        ("/api/v1/reports/coverage?section=nope", 422, "invalid_input"),
        ("/api/v1/reports/coverage?school=999", 404, "not_found"),
        ("/api/v1/reports/coverage?district=999", 404, "not_found"),
        ("/api/v1/reports/budget?budget=-5", 422, "invalid_request"),
    ],
)
async def test_bad_requests_get_clear_errors(
    rapi: Api, district: Fixture, path: str, status: int, error: str
) -> None:
    r = await rapi.client.get(path, headers=await rapi.admin())
    assert r.status_code == status, r.text
    assert r.json()["error"] == error
    if "docx" in path:
        assert r.json()["details"] == {"formats": ["json", "csv", "xlsx", "html", "pdf"]}
        assert "json, csv, xlsx, html, pdf" in r.json()["message"]
    if "nonsense" in path:
        assert "coverage" in r.json()["message"]
