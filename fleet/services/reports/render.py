"""Render a Report as JSON (machines), CSV, XLSX, or one printable HTML page that is also the PDF
(WeasyPrint).

Everything a person reads is in the current locale (`fleet.i18n.use_locale`): titles, column headers, enum
names, numbers, money and dates. JSON and a single-section CSV stay machine-shaped (keys and codes). Every CSV
and XLSX cell goes through `fleet.services.sheets.escape` (formula injection).
"""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from fleet.compat.openpyxl import share_style, style_of
from fleet.errors import FeatureUnavailable, InvalidInput
from fleet.i18n import _, current_locale
from fleet.i18n import format as fmt_
from fleet.i18n.labels import label
from fleet.services import sheets
from fleet.services.reports.model import Chart, Column, Kind, Report, Section

FORMATS = ("json", "csv", "xlsx", "html", "pdf")
MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
}
CJK_FONT_PACKAGE = "fonts-noto-cjk"
XLSX_FORMATS: dict[str, str] = {
    "int": "#,##0",
    "year": "0",
    "float": "#,##0.00",
    "money": '"¥"#,##0.00',
    "percent": "0.0%",
    "date": "yyyy-mm-dd",
    "datetime": "yyyy-mm-dd hh:mm",
}
NUMERIC = frozenset({"int", "year", "float", "money", "percent"})
# Sections with more columns than this print on landscape pages, so no header is squeezed or cut.
PORTRAIT_MAX_COLUMNS = 8


def render(report: Report, fmt: str, *, section: str | None = None, bom: bool | None = None) -> bytes:
    """The report in one format; `section` narrows JSON and CSV to one table; `bom` (CSV) defaults to the
    locale: on for zh-CN, so Excel on Chinese Windows reads UTF-8."""
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
        return to_csv(report, section, bom=current_locale() == "zh_CN" if bom is None else bom)
    if fmt == "xlsx":
        return to_xlsx(report)
    if fmt == "html":
        return to_html(report)
    return to_pdf(report)


def filename(report: Report, fmt: str) -> str:
    return f"{report.name}-{report.start}-{report.end}.{fmt}"


# --- machines -----------------------------------------------------------------------------------------------


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
        "title": _(report.title),
        "district": report.district,
        "generated_at": report.generated_at.isoformat(),
        "range": {"start": report.start.isoformat(), "end": report.end.isoformat()},
        "filters": report.filters,
        "summary": {i.key: plain(i.value) for i in report.summary},
        "notes": [_(n) for n in report.notes],
        "sections": [
            {
                "key": s.key,
                "title": _(s.title),
                "note": _(s.note) if s.note else "",
                "columns": [{"key": c.key, "label": _(c.label), "kind": c.kind} for c in s.columns],
                "rows": [{c.key: plain(v) for c, v in zip(s.columns, row, strict=True)} for row in s.rows],
                "totals": (
                    {c.key: plain(v) for c, v in zip(s.columns, s.totals, strict=True)}
                    if s.totals is not None
                    else None
                ),
            }
            for s in report.sections
            if section is None or s.key == section
        ],
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def to_csv(report: Report, section: str | None = None, *, bom: bool = False) -> bytes:
    """One section: a machine table (keys, codes). The whole report, for people: metadata lines starting with
    '#', then per section a '# section' line, the translated header, the rows, the totals row, a blank
    line."""
    rows: list[list[Any]] = []
    if section is None:
        rows.append(["# " + _("Report"), report.name, _(report.title)])
        rows.append(["# " + _("District"), report.district])
        rows.append(["# " + _("Covers"), report.start.isoformat(), report.end.isoformat()])
        rows.append(["# " + _("Generated"), report.generated_at.isoformat()])
        for k, v in report.filters.items():
            rows.append(["# " + _("Filter"), k, v])
        for i in report.summary:
            rows.append(["# " + _("Summary"), _(i.label), plain(i.value)])
        rows.append([])
    for s in report.sections:
        if section is not None and s.key != section:
            continue
        if section is not None:
            rows.append([c.key for c in s.columns])
            rows.extend([plain(v) for v in row] for row in s.rows)
            continue
        rows.append(["# " + _("Section"), s.key, _(s.title)])
        rows.append([_(c.label) for c in s.columns])
        rows.extend(_csv_row(s.columns, row) for row in s.rows)
        if s.totals is not None:
            rows.append(_csv_row(s.columns, s.totals))
        rows.append([])
    return sheets.csv_bytes(None, rows, bom=bom)


def _csv_row(columns: tuple[Column, ...], row: Any) -> list[Any]:
    return [
        label(v) if c.kind == "code" and v is not None else plain(v)
        for c, v in zip(columns, row, strict=True)
    ]


# --- XLSX ---------------------------------------------------------------------------------------------------


def _xlsx_value(value: Any, kind: Kind) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)  # Excel has no time zones: UTC, said in the header
    if kind == "code" and value is not None:
        return label(value)
    return sheets.escape(value)  # booleans stay typed (TRUE/FALSE), as Excel shows them in every language


def sheet_names(report: Report) -> list[str]:
    """Excel sheet names from the translated section titles: at most 31 characters, no []:*?/\\, unique."""
    names: list[str] = []
    seen = {_("Summary").lower()}
    for s in report.sections:
        title = _(s.sheet) if s.sheet and len(_(s.title)) > 31 else _(s.title)
        base = re.sub(r"[\[\]:*?/\\']", " ", title).strip()[:31] or s.key[:31]
        name, n = base, 2
        while name.lower() in seen:
            suffix = f" ({n})"
            name, n = base[: 31 - len(suffix)] + suffix, n + 1
        seen.add(name.lower())
        names.append(name)
    return names


def to_xlsx(report: Report) -> bytes:
    """A summary sheet, then one sheet per section: bold frozen header, autofilter, widths fitted to the
    content
    (CJK counted double), typed cells with a currency format, and a bold totals row."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook(write_only=True)
    bold = Font(bold=True)
    styles: dict[str, Any] = {}

    def cell(ws: Any, value: Any, kind: Kind = "text", *, strong: bool = False) -> Any:
        value = _xlsx_value(value, kind)
        fmt = XLSX_FORMATS.get(kind) if value is not None else None
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
    ws = wb.create_sheet(_("Summary"))
    ws.freeze_panes = "A2"
    ws.column_dimensions["A"].width = 50
    ws.column_dimensions["B"].width = 40
    ws.column_dimensions["C"].width = 12
    ws.append([cell(ws, _(report.title), strong=True), cell(ws, report.district)])
    ws.append([cell(ws, _("Generated at (UTC)")), cell(ws, report.generated_at, "datetime")])
    ws.append([cell(ws, _("Start")), cell(ws, report.start, "date")])
    ws.append([cell(ws, _("End")), cell(ws, report.end, "date")])
    ws.append([cell(ws, _("Scope")), cell(ws, scope_text(report))])
    ws.append([])
    ws.append([cell(ws, _("Figure"), strong=True), cell(ws, _("Value"), strong=True)])
    for item in report.summary:
        ws.append([cell(ws, _(item.label)), cell(ws, item.value, item.kind)])
    ws.append([])
    ws.append(
        [
            cell(ws, _("Sheet"), strong=True),
            cell(ws, _("Section"), strong=True),
            cell(ws, _("Rows"), strong=True),
        ]
    )
    for name, s in zip(names, report.sections, strict=True):
        ws.append([cell(ws, name), cell(ws, _(s.title)), cell(ws, len(s.rows), "int")])
    ws.append([])
    for note in report.notes:
        ws.append([cell(ws, _(note))])
    for name, s in zip(names, report.sections, strict=True):
        ws = wb.create_sheet(name)
        ws.freeze_panes = "A2"
        kinds = [c.kind for c in s.columns]
        widths = [sheets.display_width(_(c.label)) for c in s.columns]
        for row in list(s.rows)[:2000]:  # widths from the first rows: enough to fit, cheap on big sheets
            widths = [
                max(w, sheets.display_width(text_of(v, k)))
                for w, v, k in zip(widths, row, kinds, strict=True)
            ]
        for i, w in enumerate(widths, start=1):
            ws.column_dimensions[get_column_letter(i)].width = min(60, max(8, w + 2))
        if s.columns:
            ws.auto_filter.ref = f"A1:{get_column_letter(len(s.columns))}{len(s.rows) + 1}"
        ws.append([cell(ws, _(c.label), strong=True) for c in s.columns])
        for row in s.rows:
            ws.append([cell(ws, v, k) for v, k in zip(row, kinds, strict=True)])
        if s.totals is not None:
            ws.append([cell(ws, v, k, strong=True) for v, k in zip(s.totals, kinds, strict=True)])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# --- printable: one HTML page, which is also the PDF --------------------------------------------------------


def text_of(value: Any, kind: Kind) -> str:
    """A value as a person reads it, in the current locale."""
    if value is None:
        return "—"
    if kind == "code":
        return label(value)
    if kind == "money":
        return fmt_.money(Decimal(value))
    if kind == "percent":
        return fmt_.percent(float(value))
    if kind == "float":
        return fmt_.number(float(value), digits=2)
    if kind == "int":
        return fmt_.number(int(value), digits=0)
    if kind == "year":
        return str(value)
    if kind == "bool" or isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, datetime):
        return fmt_.moment(value.astimezone(UTC), "UTC", fmt="short") + " UTC"
    if isinstance(value, date):
        return fmt_.day(value)
    return str(value)


def scope_text(report: Report) -> str:
    if not report.filters:
        return _("all schools")
    return "; ".join(f"{_(k.capitalize())}: {v}" for k, v in report.filters.items())


def chart_data(s: Section) -> tuple[list[str], list[tuple[str, list[float]]]] | None:
    chart = s.chart
    if chart is None or not s.rows:
        return None
    rows = list(s.rows)[: chart.max_bars]
    li = s.index(chart.label)
    kind = s.columns[li].kind
    labels = [text_of(r[li], kind) for r in rows]
    series = []
    for key in chart.values:
        vi = s.index(key)
        series.append((_(s.columns[vi].label), [float(r[vi] or 0) for r in rows]))
    return labels, series


def _matplotlib() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


@cache
def cjk_font_file() -> str | None:
    """A Simplified-Chinese font file from fontconfig (Debian: fonts-noto-cjk), or None when none is
    installed."""
    if shutil.which("fc-list") is None:
        return None
    try:
        out = subprocess.run(
            ["fc-list", ":lang=zh-cn", "file", "family"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    files = [line.split(":")[0].strip() for line in out.splitlines() if line.strip()]
    # Prefer a sans face that is the SC (Simplified) default of its collection.
    files.sort(key=lambda f: ("Sans" not in f, "CJK" not in f, "Bold" in f, f))
    return files[0] if files else None


@cache
def _cjk_family() -> str | None:
    path = cjk_font_file()
    if path is None:
        return None
    from matplotlib import font_manager

    try:
        font_manager.fontManager.addfont(path)
        return str(font_manager.FontProperties(fname=path).get_name())
    except (OSError, RuntimeError, ValueError):
        return None


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
    ax.set_title(_(chart.title), fontsize=10)
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
    from matplotlib import rc_context

    family = _cjk_family() if current_locale() == "zh_CN" else None
    rc: Any = {"font.family": [family, "DejaVu Sans"] if family else ["DejaVu Sans"], "svg.fonttype": "path"}
    with rc_context(rc):
        fig = figure_cls(figsize=(7.5, max(2.5, 0.28 * len(labels) + 1) if s.chart.horizontal else 3.2))
        ax = fig.add_subplot()
        draw_chart(fig, ax, s.chart, labels, series)
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    # Each chart's ids (glyphs, clip paths) get the section's prefix: two charts on one page must not share
    # ids.
    prefix = f"c-{s.key}-"
    svg = (
        svg.replace('id="', f'id="{prefix}')
        .replace('href="#', f'href="#{prefix}')
        .replace("url(#", f"url(#{prefix}")
    )
    return '<figure class="chart">' + svg + "</figure>"


def css_chart(chart: Chart, labels: list[str], series: list[tuple[str, list[float]]]) -> str:
    """Plain HTML bars for installs without matplotlib."""
    top = max([v for _n, vs in series for v in vs] + [1e-9])
    out = [f'<figure class="chart css-chart"><figcaption>{html.escape(_(chart.title))}</figcaption>']
    for i, lab in enumerate(labels):
        out.append(f'<div class="bar-row"><span class="bar-label">{html.escape(lab)}</span>')
        for j, (name, values) in enumerate(series):
            pct = max(0.0, values[i]) / top * 100
            out.append(
                f'<span class="bar s{j}" style="width:{pct:.1f}%" title="{html.escape(name)}: '
                f'{values[i]:g}"></span>'
            )
        out.append("</div>")
    out.append("</figure>")
    return "".join(out)


FONTS = '"Noto Sans CJK SC","Noto Sans SC","Source Han Sans SC","WenQuanYi Zen Hei","DejaVu Sans",sans-serif'
CSS = (
    "body{font-family:"
    + FONTS
    + ";"
    + (
        "font-size:10px;margin:2em;color:#222}"
        "h1{font-size:18px;margin:0 0 .3em}h2{font-size:14px;margin:1.4em 0 .4em;border-bottom:1px solid "
        "#999}"
        "table{border-collapse:collapse;margin:.4em 0;width:100%}"
        "th,td{border:1px solid #bbb;padding:2px 5px;vertical-align:top}"
        "th{background:#eee;text-align:left;font-weight:bold;overflow-wrap:break-word;hyphens:manual}"
        "td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
        "tfoot td{font-weight:bold;background:#f6f6f6}"
        "dl.meta{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dt{font-weight:bold}"
        "p.note{color:#555;font-style:italic}figure.chart{margin:.5em 0;max-width:780px}figure.chart "
        "svg{width:100%;height:auto}"
        ".bar-row{display:flex;align-items:center;gap:4px;margin:1px 0}.bar-label{width:200px;font-size:10px}"
        ".bar{display:inline-block;height:10px;background:#4c72b0}.bar.s1{background:#dd8452}.bar.s2{background:#55a868}"
        "@media "
        "print{body{margin:0}h2{page-break-after:avoid;break-after:avoid}thead{display:table-header-group}"
        "tr{break-inside:avoid}section.wide{page:wide}section.wide "
        "table{font-size:8.5px}figure.chart{break-inside:avoid}}"
    )
)


def _css_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def page_numbers(template: str) -> str:
    """CSS content for a translated "Page {page} of {pages}" (the words around the counters vary)."""
    parts = re.split(r"(\{page\}|\{pages\})", template)
    counters = {"{page}": "counter(page)", "{pages}": "counter(pages)"}
    return " ".join(counters.get(p) or _css_string(p) for p in parts if p)


def page_css(report: Report) -> str:
    """A4 pages with the running header (district, report, range, scope, generation time) and page numbers."""
    left = " · ".join(x for x in (report.district, _(report.title)) if x)
    right = _("{start} to {end}", start=fmt_.day(report.start), end=fmt_.day(report.end))
    scope = _(
        "Scope: {scope} · generated {at}",
        scope=scope_text(report),
        at=text_of(report.generated_at, "datetime"),
    )
    page = page_numbers(_("Page {page} of {pages}"))
    boxes = (
        f"@top-left{{content:{_css_string(left)};font-size:8px;color:#444;font-family:{FONTS}}}"
        f"@top-right{{content:{_css_string(right)};font-size:8px;color:#444;font-family:{FONTS}}}"
        f"@bottom-left{{content:{_css_string(scope)};font-size:7px;color:#666;font-family:{FONTS}}}"
        f"@bottom-right{{content:{page};font-size:8px;color:#444;font-family:{FONTS}}}"
    )
    return (
        f"@page{{size:A4;margin:18mm 12mm 16mm 12mm;{boxes}}}"
        f"@page wide{{size:A4 landscape;margin:18mm 12mm 16mm 12mm;{boxes}}}"
    )


def _table(s: Section) -> str:
    columns = s.columns
    head = "".join(
        f'<th scope="col" data-key="{html.escape(c.key)}">{html.escape(_(c.label))}</th>' for c in columns
    )

    def cells(row: Any) -> str:
        return "".join(
            f'<td class="num">{html.escape(text_of(v, c.kind))}</td>'
            if c.kind in NUMERIC
            else f"<td>{html.escape(text_of(v, c.kind))}</td>"
            for c, v in zip(columns, row, strict=True)
        )

    body = "".join(f"<tr>{cells(row)}</tr>" for row in s.rows)
    foot = f'<tfoot><tr class="totals">{cells(s.totals)}</tr></tfoot>' if s.totals is not None else ""
    return (
        f'<table class="report-table" data-section="{html.escape(s.key)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody>{foot}</table>"
    )


def to_html(report: Report) -> bytes:
    """One self-contained page (the PDF prints the same markup): metadata, summary, each section with its
    chart,
    its whole table and its totals row."""
    e = html.escape
    lang = "zh-CN" if current_locale() == "zh_CN" else "en"
    covers = _("{start} to {end}", start=fmt_.day(report.start), end=fmt_.day(report.end))
    title = e(_(report.title))
    parts = [
        (
            f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}{page_css(report)}</style></head><body>"
        ),
        (
            f'<header><h1>{e(_(report.title))}</h1><dl class="meta">'
            f"<dt>{e(_('District'))}</dt><dd>{e(report.district or '—')}</dd>"
            f"<dt>{e(_('Covers'))}</dt><dd>{e(covers)}</dd>"
            f"<dt>{e(_('Scope'))}</dt><dd>{e(scope_text(report))}</dd>"
            f"<dt>{e(_('Generated'))}</dt><dd>{e(text_of(report.generated_at, 'datetime'))}</dd>"
            "</dl></header>"
        ),
    ]
    parts.append(f'<section id="summary"><h2>{e(_("Summary"))}</h2><table class="summary"><tbody>')
    for i in report.summary:
        parts.append(
            f'<tr data-key="{e(i.key)}"><th scope="row">{e(_(i.label))}</th>'
            f'<td class="num">{e(text_of(i.value, i.kind))}</td></tr>'
        )
    parts.append("</tbody></table>")
    parts.extend(f'<p class="note">{e(_(n))}</p>' for n in report.notes)
    parts.append("</section>")
    for s in report.sections:
        wide = " wide" if len(s.columns) > PORTRAIT_MAX_COLUMNS else ""
        parts.append(
            f'<section id="section-{e(s.key)}" class="report-section{wide}"><h2>{e(_(s.title))}</h2>'
        )
        if s.note:
            parts.append(f'<p class="note">{e(_(s.note))}</p>')
        parts.append(svg_chart(s))
        if not s.rows:
            parts.append(f'<p class="empty">{e(_("Nothing to list for this range."))}</p>')
        else:
            parts.append(_table(s))
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts).encode()


def to_pdf(report: Report) -> bytes:
    """The HTML page printed (`fleet.services.reports.pdf`: Chromium, or WeasyPrint): A4, running header, page
    numbers, tables continued with their header.

    Fonts come from fontconfig; a Chinese report without a CJK font answers 501 naming the package rather than
    printing boxes."""
    from fleet.services.reports import pdf

    if current_locale() == "zh_CN" and cjk_font_file() is None:
        raise FeatureUnavailable(
            _(
                "A Chinese PDF needs a CJK font and none is installed; install the Debian package {package} "
                "(apt-get install {package}). format=html works without it.",
                package=CJK_FONT_PACKAGE,
            ),
            details={"install": f"apt-get install {CJK_FONT_PACKAGE}", "alternative": "format=html"},
        )
    return pdf.print_pdf(to_html(report).decode(), cjk_font_file())
