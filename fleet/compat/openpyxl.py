"""openpyxl 3.1's private API, in one place: a cell's style array, shared between write-only cells.

Styling a WriteOnlyCell through its public properties (`number_format`, `font`) looks the style up in the
workbook's tables for every cell: half the cost of writing a big report sheet. A cell's style is one small
array (`_style`, indices into those tables); styling one cell per format and copying its array to the others
writes the same XLSX twice as fast. tests/compat/test_openpyxl_contract.py pins it (pyproject.toml pins the
tested minor).
"""

from __future__ import annotations

import copy
from typing import Any

# The openpyxl minor this module was written against (pyproject.toml pins it; the contract test checks both).
TESTED_MINOR = "3.1"


def style_of(cell: Any) -> Any:
    """The style array of a styled cell, to share with other cells of the same workbook."""
    return cell._style


def share_style(cell: Any, style: Any) -> None:
    """Give `cell` the style of the cell `style` was taken from (a copy: cells never share one array)."""
    cell._style = copy.copy(style)
