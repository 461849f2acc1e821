"""Render a Report as JSON or CSV (machines), XLSX (typed cells, one sheet per section), printable HTML or
PDF.

HTML always works; its charts are inline SVG from matplotlib when installed, plain HTML bars otherwise. PDF
needs matplotlib (the `reports` extra).
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import textwrap
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from fleet.compat.openpyxl import share_style, style_of
from fleet.errors import FeatureUnavailable, InvalidInput
from fleet.services.reports.model import Chart, Column, Kind, Report, Section

FORMATS = ("json", "csv", "xlsx", "html", "pdf")
MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
}
# Printed documents show at most this many rows per section; the full tables are in XLSX, CSV and JSON.
HTML_MAX_ROWS = 500
PDF_MAX_ROWS = 40
PDF_INSTALL_HINT = "PDF reports need matplotlib: pip install 'labfleet[reports]'. format=html always works."
XLSX_FORMATS: dict[str, str] = {
    "int": "#,##0",
    "year": "0",
    "float": "#,##0.00",
    "money": "#,##0.00",
    "percent": "0.00%",
    "date": "yyyy-mm-dd",
    "datetime": "yyyy-mm-dd hh:mm:ss",
}


def render(report: Report, fmt: str, *, section: str | None = None) -> bytes:
    """The report in one format; `section` narrows JSON and CSV to one table."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", details={"formats": list(FORMATS)})
    if section is not None and section not in {s.key for s in report.sections}:
        raise InvalidInput(
            f"report {report.name} has no section {section!r}",
            details={"sections": [s.key for s in report.sections]},
        )
    if fmt == "json":
        return to_json(report, section)
    if fmt == "csv":
        return to_csv(report, section)
    if fmt == "xlsx":
        return to_xlsx(report)
    if fmt == "html":
        return to_html(report)
    return to_pdf(report)


def filename(report: Report, fmt: str) -> str:
    return f"{report.name}-{report.start}-{report.end}.{fmt}"


# --- machines
# ------------------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A JSON/CSV-ready value: numbers stay numbers, dates become ISO strings."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def to_json(report: Report, section: str | None = None) -> bytes:
    doc: dict[str, Any] = {
        "report": report.name,
        "title": report.title,
        "generated_at": report.generated_at.isoformat(),
        "range": {"start": report.start.isoformat(), "end": report.end.isoformat()},
        "filters": report.filters,
        "summary": {i.key: plain(i.value) for i in report.summary},
        "notes": list(report.notes),
        "sections": [
            {
                "key": s.key,
                "title": s.title,
                "note": s.note,
                "columns": [{"key": c.key, "label": c.label, "kind": c.kind} for c in s.columns],
                "rows": [{c.key: plain(v) for c, v in zip(s.columns, row, strict=True)} for row in s.rows],
            }
            for s in report.sections
            if section is None or s.key == section
        ],
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def to_csv(report: Report, section: str | None = None) -> bytes:
    """One section: a plain table. The whole report: metadata lines starting with '#', then one block per
    section (a '# section' line, a header, the rows, a blank line)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    if section is None:
        w.writerow(["# report", report.name, report.title])
        w.writerow(["# range", report.start.isoformat(), report.end.isoformat()])
        w.writerow(["# generated_at", report.generated_at.isoformat()])
        for k, v in report.filters.items():
            w.writerow(["# filter", k, v])
        for i in report.summary:
            w.writerow(["# summary", i.key, plain(i.value)])
        w.writerow([])
    for s in report.sections:
        if section is not None and s.key != section:
            continue
        if section is None:
            w.writerow(["# section", s.key, s.title])
        w.writerow([c.key for c in s.columns])
        for row in s.rows:
            w.writerow(["" if v is None else plain(v) for v in row])
        if section is None:
            w.writerow([])
    return out.getvalue().encode()


# --- XLSX
# ------------------------------------------------------------------------------------------------------


def _xlsx_value(value: Any, kind: Kind) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)  # Excel has no time zones: UTC, said in the header
    return value


def sheet_names(report: Report) -> list[str]:
    """Excel sheet names: at most 31 characters, no []:*?/\\, unique, never 'Summary'."""
    names, seen = [], {"summary"}
    for s in report.sections:
        base = re.sub(r"[\[\]:*?/\\]", "_", s.key)[:31] or "section"
        name, n = base, 2
        while name.lower() in seen:
            suffix = f"_{n}"
            name, n = base[: 31 - len(suffix)] + suffix, n + 1
        seen.add(name.lower())
        names.append(name)
    return names


def to_xlsx(report: Report) -> bytes:
    """A Summary sheet, then one sheet per section with a frozen header row and typed cells."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook(write_only=True)
    bold = Font(bold=True)
    styles: dict[str, Any] = {}

    def cell(ws: Any, value: Any, kind: Kind = "text", *, strong: bool = False) -> Any:
        value = _xlsx_value(value, kind)
        fmt = XLSX_FORMATS.get(kind) if value is not None and kind != "int" else None
        if fmt is None and not strong:
            return value  # a plain value: General format, typed by openpyxl from its Python type
        c = WriteOnlyCell(ws, value=value)
        key = f"{fmt}|{strong}"
        if key not in styles:  # style once per format, then share the style array: ~2x faster on big sheets
            if fmt:
                c.number_format = fmt
            if strong:
                c.font = bold
            styles[key] = style_of(c)
        share_style(c, styles[key])
        return c

    names = sheet_names(report)
    ws = wb.create_sheet("Summary")
    ws.freeze_panes = "A2"
    ws.column_dimensions["A"].width = 48
    ws.column_dimensions["B"].width = 40
    ws.append([cell(ws, report.title, strong=True), cell(ws, report.name)])
    ws.append([cell(ws, "Generated at (UTC)"), cell(ws, report.generated_at, "datetime")])
    ws.append([cell(ws, "Start"), cell(ws, report.start, "date")])
    ws.append([cell(ws, "End"), cell(ws, report.end, "date")])
    for k, v in report.filters.items():
        ws.append([cell(ws, f"Filter: {k}"), cell(ws, v)])
    if not report.filters:
        ws.append([cell(ws, "Filters"), cell(ws, "none")])
    ws.append([])
    ws.append([cell(ws, "Figure", strong=True), cell(ws, "Value", strong=True)])
    for item in report.summary:
        ws.append([cell(ws, item.label), cell(ws, item.value, item.kind)])
    ws.append([])
    ws.append(
        [cell(ws, "Sheet", strong=True), cell(ws, "Section", strong=True), cell(ws, "Rows", strong=True)]
    )
    for name, s in zip(names, report.sections, strict=True):
        ws.append([cell(ws, name), cell(ws, s.title), cell(ws, len(s.rows), "int")])
    ws.append([])
    for note in report.notes:
        ws.append([cell(ws, note)])
    for name, s in zip(names, report.sections, strict=True):
        ws = wb.create_sheet(name)
        ws.freeze_panes = "A2"
        for i, c in enumerate(s.columns, start=1):
            ws.column_dimensions[get_column_letter(i)].width = max(10, min(40, len(c.label) + 2))
        ws.append([cell(ws, c.label, strong=True) for c in s.columns])
        kinds = [c.kind for c in s.columns]
        for row in s.rows:
            ws.append([cell(ws, v, k) for v, k in zip(row, kinds, strict=True)])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# --- printable
# ---------------------------------------------------------------------------------------------------


def text_of(value: Any, kind: Kind) -> str:
    """A value as a person reads it in a printed table."""
    if value is None:
        return "—"
    if kind == "money":
        return f"{Decimal(value):,.2f}"
    if kind == "percent":
        return f"{float(value) * 100:.1f}%"
    if kind == "float":
        return f"{float(value):,.2f}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "year":
        return str(value)
    if kind == "bool" or isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def chart_data(s: Section) -> tuple[list[str], list[tuple[str, list[float]]]] | None:
    chart = s.chart
    if chart is None or not s.rows:
        return None
    rows = list(s.rows)[: chart.max_bars]
    li = s.index(chart.label)
    labels = [str(r[li]) for r in rows]
    series = []
    for key in chart.values:
        vi = s.index(key)
        series.append((s.columns[vi].label, [float(r[vi] or 0) for r in rows]))
    return labels, series


def _matplotlib() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def draw_chart(
    fig: Any, ax: Any, chart: Chart, labels: list[str], series: list[tuple[str, list[float]]]
) -> None:
    n = len(series)
    width = 0.8 / n
    positions = list(range(len(labels)))
    for i, (name, values) in enumerate(series):
        offs = [p - 0.4 + width * (i + 0.5) for p in positions]
        if chart.horizontal:
            ax.barh(offs, values, height=width, label=name)
        else:
            ax.bar(offs, values, width=width, label=name)
    if chart.horizontal:
        ax.set_yticks(positions, labels, fontsize=7)
        ax.invert_yaxis()
    else:
        ax.set_xticks(positions, labels, fontsize=7, rotation=30 if len(labels) > 6 else 0, ha="right")
    ax.set_title(chart.title, fontsize=10)
    ax.tick_params(labelsize=7)
    if n > 1:
        ax.legend(fontsize=7)
    ax.grid(axis="x" if chart.horizontal else "y", alpha=0.3)


def svg_chart(s: Section) -> str:
    data = chart_data(s)
    figure_cls = _matplotlib()
    if data is None or s.chart is None:
        return ""
    labels, series = data
    if figure_cls is None:
        return css_chart(s.chart, labels, series)
    fig = figure_cls(figsize=(7.5, max(2.5, 0.28 * len(labels) + 1) if s.chart.horizontal else 3.2))
    ax = fig.add_subplot()
    draw_chart(fig, ax, s.chart, labels, series)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    return '<figure class="chart">' + svg[svg.index("<svg") :] + "</figure>"


def css_chart(chart: Chart, labels: list[str], series: list[tuple[str, list[float]]]) -> str:
    """Plain HTML bars for installs without matplotlib."""
    top = max([v for _, vs in series for v in vs] + [1e-9])
    out = [f'<figure class="chart css-chart"><figcaption>{html.escape(chart.title)}</figcaption>']
    for i, label in enumerate(labels):
        out.append(f'<div class="bar-row"><span class="bar-label">{html.escape(label)}</span>')
        for j, (name, values) in enumerate(series):
            pct = max(0.0, values[i]) / top * 100
            out.append(
                f'<span class="bar s{j}" style="width:{pct:.1f}%" title="{html.escape(name)}: '
                f'{values[i]:g}"></span>'
            )
        out.append("</div>")
    out.append("</figure>")
    return "".join(out)


CSS = """
body{font-family:"DejaVu Sans",Arial,sans-serif;font-size:11px;margin:2em;color:#222}
h1{font-size:20px;margin:0 0 .3em}h2{font-size:15px;margin:1.6em 0 .4em;border-bottom:1px solid #999}
table{border-collapse:collapse;margin:.4em 0}th,td{border:1px solid #bbb;padding:2px 6px}
th{background:#eee;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dt{font-weight:bold}
p.note{color:#555;font-style:italic}figure.chart{margin:.5em 0;max-width:780px}
.bar-row{display:flex;align-items:center;gap:4px;margin:1px 0}.bar-label{width:200px;font-size:10px}
.bar{display:inline-block;height:10px;background:#4c72b0}.bar.s1{background:#dd8452}.bar.s2{background:#55a868}
@media print{body{margin:0}section{page-break-inside:auto}h2{page-break-after:avoid}
thead{display:table-header-group}}
"""


def _table(columns: tuple[Column, ...], rows: Any, cls: str, key: str) -> str:
    numeric = {"int", "year", "float", "money", "percent"}
    head = "".join(
        f'<th scope="col" data-key="{html.escape(c.key)}">{html.escape(c.label)}</th>' for c in columns
    )
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{html.escape(text_of(v, c.kind))}</td>'
            if c.kind in numeric
            else f"<td>{html.escape(text_of(v, c.kind))}</td>"
            for c, v in zip(columns, row, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<table class="{cls}" data-section="{html.escape(key)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def to_html(report: Report) -> bytes:
    """A self-contained printable page: metadata, summary, then each section with its chart and table."""
    e = html.escape
    parts = [
        (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{e(report.title)}</title>'
            f"<style>{CSS}</style></head><body>"
        ),
        (
            f'<header><h1>{e(report.title)}</h1><dl class="meta">'
            f"<dt>Report</dt><dd>{e(report.name)}</dd>"
            f"<dt>Covers</dt><dd>{report.start} to {report.end}</dd>"
            f"<dt>Generated</dt><dd>{e(text_of(report.generated_at, 'datetime'))}</dd>"
        ),
    ]
    for k, v in report.filters.items() or {"filters": "none"}.items():
        parts.append(f"<dt>{e(k.capitalize())}</dt><dd>{e(v)}</dd>")
    parts.append("</dl></header>")
    parts.append('<section id="summary"><h2>Summary</h2><table class="summary"><tbody>')
    for i in report.summary:
        parts.append(
            f'<tr data-key="{e(i.key)}"><th scope="row">{e(i.label)}</th>'
            f'<td class="num">{e(text_of(i.value, i.kind))}</td></tr>'
        )
    parts.append("</tbody></table>")
    parts.extend(f'<p class="note">{e(n)}</p>' for n in report.notes)
    parts.append("</section>")
    for s in report.sections:
        parts.append(f'<section id="section-{e(s.key)}"><h2>{e(s.title)}</h2>')
        if s.note:
            parts.append(f'<p class="note">{e(s.note)}</p>')
        parts.append(svg_chart(s))
        shown = list(s.rows)[:HTML_MAX_ROWS]
        if not s.rows:
            parts.append('<p class="empty">No rows.</p>')
        else:
            parts.append(_table(s.columns, shown, "report-table", s.key))
        if len(s.rows) > len(shown):
            parts.append(
                f'<p class="note">First {len(shown)} of {len(s.rows)} rows; the full table is in the XLSX, '
                "CSV and JSON formats.</p>"
            )
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts).encode()


def to_pdf(report: Report) -> bytes:
    """A4 pages: a cover with the summary, then per section its chart and the first rows of its table."""
    figure_cls = _matplotlib()
    if figure_cls is None:
        raise FeatureUnavailable(
            PDF_INSTALL_HINT,
            details={"install": "pip install 'labfleet[reports]'", "alternative": "format=html"},
        )
    from matplotlib.backends.backend_pdf import PdfPages

    buf = io.BytesIO()
    with PdfPages(buf, metadata={"Title": report.title, "Creator": "LabFleet"}) as pdf:
        fig = figure_cls(figsize=(8.27, 11.69))
        fig.text(0.08, 0.95, report.title, fontsize=18, weight="bold")
        meta = [
            f"Report: {report.name}",
            f"Covers: {report.start} to {report.end}",
            f"Generated: {text_of(report.generated_at, 'datetime')}",
        ]
        meta += [f"{k.capitalize()}: {v}" for k, v in report.filters.items()] or ["Filters: none"]
        for i, line in enumerate(meta):
            fig.text(0.08, 0.91 - i * 0.022, line, fontsize=9)
        ax = fig.add_axes((0.08, 0.35, 0.84, 0.45))
        ax.axis("off")
        table = ax.table(
            cellText=[[i.label, text_of(i.value, i.kind)] for i in report.summary],
            colLabels=["Figure", "Value"],
            loc="upper center",
            colWidths=[0.7, 0.3],
            cellLoc="left",
        )
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        y = 0.3
        for note in report.notes:
            wrapped = textwrap.fill(note, 120)
            fig.text(0.08, y, wrapped, fontsize=7, style="italic", va="top")
            y -= 0.015 * (wrapped.count("\n") + 2)
        pdf.savefig(fig)
        for s in report.sections:
            fig = figure_cls(figsize=(11.69, 8.27))
            fig.text(0.05, 0.95, s.title, fontsize=14, weight="bold")
            data = chart_data(s)
            table_top = 0.9
            if data is not None and s.chart is not None:
                ax = fig.add_axes(
                    (0.25 if s.chart.horizontal else 0.08, 0.52, 0.65 if s.chart.horizontal else 0.85, 0.38)
                )
                draw_chart(fig, ax, s.chart, *data)
                table_top = 0.44
            rows = list(s.rows)[: PDF_MAX_ROWS if data is None else PDF_MAX_ROWS // 2]
            if rows:
                ax = fig.add_axes((0.03, 0.05, 0.94, table_top - 0.07))
                ax.axis("off")
                t = ax.table(
                    cellText=[
                        [text_of(v, c.kind)[:40] for c, v in zip(s.columns, r, strict=True)] for r in rows
                    ],
                    colLabels=[c.label for c in s.columns],
                    loc="upper center",
                    cellLoc="left",
                )
                t.auto_set_font_size(False)
                t.set_fontsize(6 if len(s.columns) > 8 else 7)
            else:
                fig.text(0.05, table_top - 0.05, "No rows.", fontsize=9)
            if len(s.rows) > len(rows):
                fig.text(
                    0.05,
                    0.02,
                    f"First {len(rows)} of {len(s.rows)} rows; the full table is in the XLSX, CSV "
                    "and JSON formats.",
                    fontsize=7,
                    style="italic",
                )
            pdf.savefig(fig)
    return buf.getvalue()
