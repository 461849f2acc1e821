"""Reports in Chinese and English, and the PDF printed from the same HTML: embedded CJK font, Chinese school
names
and headers in the text layer, running header and page numbers, tables continued with their header, 501 naming
the font package when no CJK font is installed; XLSX and CSV for Excel on Chinese Windows."""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import update

from fleet.errors import FeatureUnavailable
from fleet.i18n import use_locale
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import District, School
from fleet.services.reports.model import Column, Report, Section, SummaryItem
from tests.conftest import Api, need_external
from tests.reports.district import Fixture

r_ = importlib.import_module("fleet.services.reports.render")  # the module; the package exports a function
H1_2026 = {"start": "2026-01-01", "end": "2026-06-30"}
# Pages rendered by the tests are kept here for people to look at (CI uploads the folder when it fails).
PNG_DIR = Path(os.environ.get("LABFLEET_TEST_PNG_DIR", "/tmp/labfleet-report-png"))


async def fetch(api: Api, name: str, fmt: str, **params: Any) -> Any:
    return await api.client.get(
        f"/api/v1/reports/{name}", params={"format": fmt, **params}, headers=await api.admin()
    )


async def chinese_names(api: Api, district: Fixture) -> None:
    async with unit_of_work(api.sessions) as s:
        await s.execute(update(School).where(School.id == district.school_a).values(name="第一实验小学"))
        await s.execute(update(District).where(District.id == district.district).values(name="海淀区"))


def _tool(name: str) -> None:
    if shutil.which(name) is None:
        need_external(f"{name} (Debian poppler-utils)")


def _run(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, check=True).stdout


async def test_a_chinese_pdf_embeds_a_cjk_font_and_reads_in_chinese(
    rapi: Api, district: Fixture, tmp_path: Path
) -> None:
    for tool in ("pdffonts", "pdftotext", "pdftoppm"):
        _tool(tool)
    await chinese_names(rapi, district)
    r = await fetch(rapi, "inventory", "pdf", lang="zh-CN", **H1_2026)
    assert r.status_code == 200, r.text[:300]
    pdf = tmp_path / "inventory-zh.pdf"
    pdf.write_bytes(r.content)
    fonts = await asyncio.to_thread(_run, "pdffonts", str(pdf))
    cjk = [line for line in fonts.splitlines() if "CJK" in line]
    assert cjk and all(" yes " in line for line in cjk), fonts  # embedded
    text = await asyncio.to_thread(_run, "pdftotext", "-layout", str(pdf), "-")
    for words in ("第一实验小学", "学校代码", "按学校", "设备台账", "海淀区", "合计", "在用", "自有"):
        assert words in text, words
    assert "in_service" not in text and "smart_classroom" not in text
    assert "第 1 页，共" in text  # page numbers in the report's language
    PNG_DIR.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(
        _run, "pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "2", str(pdf), str(PNG_DIR / "inventory-zh")
    )
    assert list(PNG_DIR.glob("inventory-zh*.png"))


async def test_an_english_pdf_has_the_running_header_page_numbers_and_totals(
    rapi: Api, district: Fixture, tmp_path: Path
) -> None:
    for tool in ("pdftotext", "pdftoppm"):
        _tool(tool)
    r = await fetch(rapi, "reliability", "pdf", lang="en", **H1_2026)
    assert r.status_code == 200
    pdf = tmp_path / "reliability-en.pdf"
    pdf.write_bytes(r.content)
    text = await asyncio.to_thread(_run, "pdftotext", "-layout", str(pdf), "-")
    assert "Fixture District · Reliability by model, supplier and batch" in text
    assert "Page 1 of" in text and "Scope: all schools" in text
    assert "Total" in text and "Failures per 100 device-months" in text
    PNG_DIR.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(
        _run, "pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "2", str(pdf), str(PNG_DIR / "reliability-en")
    )


def test_long_tables_continue_over_pages_with_their_header(tmp_path: Path) -> None:
    _tool("pdftotext")
    rows = [(f"AT-{i:04d}", f"School {i % 7}", i) for i in range(400)]
    report = Report(
        name="inventory",
        title="Inventory",
        generated_at=datetime(2026, 9, 1, tzinfo=UTC),
        start=date(2026, 1, 1),
        end=date(2026, 6, 30),
        filters={},
        summary=(SummaryItem("devices", "Devices", 400, "int"),),
        sections=(
            Section(
                "long",
                "By school",
                (Column("asset_tag", "Asset tag"), Column("school", "School"), Column("n", "Devices", "int")),
                rows,
                totals=("Total", None, sum(r[2] for r in rows)),
            ),
        ),
        district="Fixture District",
    )
    with use_locale("en"):
        pdf = tmp_path / "long.pdf"
        pdf.write_bytes(r_.render(report, "pdf"))
    pages = _run("pdftotext", "-layout", str(pdf), "-").split("\f")
    pages = [p for p in pages if p.strip()]
    assert len(pages) >= 5
    # every row printed (no "first 40 rows"), and each continued page repeats the column header
    assert "AT-0399" in pages[-1] and "79,800" in pages[-1]
    for page in pages[1:]:
        assert "Asset tag" in page and "Page" in page


async def test_a_chinese_pdf_without_a_cjk_font_is_a_clear_501(
    rapi: Api, district: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("fc-list") is None:
        need_external("fc-list (Debian fontconfig)")
    # A fontconfig that knows no fonts: what a server without fonts-noto-cjk sees.
    conf = tmp_path / "fonts.conf"
    conf.write_text('<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig></fontconfig>')
    monkeypatch.setenv("FONTCONFIG_FILE", str(conf))
    r_.cjk_font_file.cache_clear()
    try:
        r = await fetch(rapi, "inventory", "pdf", lang="zh-CN", **H1_2026)
    finally:
        monkeypatch.delenv("FONTCONFIG_FILE")
        r_.cjk_font_file.cache_clear()
    assert r.status_code == 501
    assert "fonts-noto-cjk" in r.json()["message"]
    assert (await fetch(rapi, "inventory", "html", lang="zh-CN", **H1_2026)).status_code == 200


async def test_xlsx_in_chinese_with_readable_sheets_filters_totals_and_currency(
    rapi: Api, district: Fixture
) -> None:
    r = await fetch(rapi, "inventory", "xlsx", lang="zh-CN", **H1_2026)
    wb = load_workbook(io.BytesIO(r.content))
    assert wb.sheetnames[:3] == ["摘要", "按型号", "按供应商"]
    ws = wb["按型号"]
    header = [c.value for c in ws[1]]
    assert header[:4] == ["型号", "类型", "供应商", "设备数"]
    assert (
        ws.freeze_panes == "A2"
        and ws.auto_filter.ref == f"A1:{ws.cell(1, len(header)).column_letter}{ws.max_row - 1}"
    )
    last = [c for c in ws[ws.max_row]]
    assert last[0].value == "合计" and last[0].font.b and last[3].value == 7
    cost = header.index("采购成本（自有）")
    assert ws.cell(2, cost + 1).number_format == '"¥"#,##0.00'
    assert ws.cell(2, 2).value == "学习终端"  # a code (terminal) by its name
    assert ws.column_dimensions["A"].width >= len("EduTech LT-100")


async def test_csv_reports_carry_a_bom_in_chinese_unless_turned_off(rapi: Api, district: Fixture) -> None:
    zh = await fetch(rapi, "inventory", "csv", lang="zh-CN", **H1_2026)
    assert zh.content.startswith("\ufeff".encode()) and "按型号" in zh.content.decode("utf-8-sig")
    off = await fetch(rapi, "inventory", "csv", lang="zh-CN", bom="false", **H1_2026)
    assert not off.content.startswith("\ufeff".encode())
    en = await fetch(rapi, "inventory", "csv", lang="en", **H1_2026)
    assert not en.content.startswith("\ufeff".encode())


def _tiny_report() -> Report:
    return Report(
        name="inventory",
        title="Inventory",
        generated_at=datetime(2026, 9, 1, tzinfo=UTC),
        start=date(2026, 1, 1),
        end=date(2026, 6, 30),
        filters={},
        summary=(SummaryItem("devices", "Devices", 2, "int"),),
        sections=(
            Section("s", "By school", (Column("school", "School"),), [("第一实验小学",), ("School 2",)]),
        ),
        district="Fixture District",
    )


def test_the_weasyprint_engine_still_prints_the_same_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tool("pdftotext")
    monkeypatch.setenv("LABFLEET_REPORTS__PDF_ENGINE", "weasyprint")
    with use_locale("en"):
        pdf = tmp_path / "weasy.pdf"
        pdf.write_bytes(r_.render(_tiny_report(), "pdf"))
    text = _run("pdftotext", "-layout", str(pdf), "-")
    assert "第一实验小学" in text and "Page 1 of 1" in text
    assert "WeasyPrint" in _run("pdfinfo", str(pdf))  # the engine asked for, not the default one


def test_no_pdf_engine_is_a_clear_501_naming_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABFLEET_REPORTS__PDF_ENGINE", "chromium")
    monkeypatch.setenv("LABFLEET_REPORTS__CHROMIUM_PATH", "/nonexistent/chromium")
    with use_locale("en"), pytest.raises(FeatureUnavailable) as err:
        r_.render(_tiny_report(), "pdf")
    assert "chromium" in err.value.message and "labfleet[reports]" in err.value.message
