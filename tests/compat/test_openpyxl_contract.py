"""The openpyxl private API that fleet.compat.openpyxl relies on: a write-only cell's style array."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from io import BytesIO
from pathlib import Path

from openpyxl import Workbook, load_workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font

from fleet.compat import openpyxl as compat

ROOT = Path(__file__).resolve().parents[2]


def test_installed_openpyxl_is_the_tested_minor_and_pyproject_pins_it() -> None:
    assert version("openpyxl").startswith(compat.TESTED_MINOR + "."), version("openpyxl")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in deps if d.startswith("openpyxl")]
    major, minor = compat.TESTED_MINOR.split(".")
    assert re.fullmatch(rf"openpyxl>={major}\.{minor}(\.\d+)?,<{major}\.{int(minor) + 1}", pin), pin


def test_a_shared_style_writes_the_same_format_and_font_as_styling_each_cell() -> None:
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("s")
    first = WriteOnlyCell(ws, value=1234.5)
    first.number_format = "#,##0.00"
    first.font = Font(bold=True)
    style = compat.style_of(first)
    second = WriteOnlyCell(ws, value=99.0)
    compat.share_style(second, style)
    assert compat.style_of(second) is not style  # a copy: restyling one cell never restyles another
    ws.append([first, second])
    out = BytesIO()
    wb.save(out)
    row = next(load_workbook(BytesIO(out.getvalue())).active.iter_rows())
    assert [(c.value, c.number_format, c.font.b) for c in row] == [
        (1234.5, "#,##0.00", True),
        (99, "#,##0.00", True),
    ]
