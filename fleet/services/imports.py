"""Bulk import and export of devices and rooms, from the files offices produce: validate every row, then
commit all or nothing.

Reading: XLSX (first sheet, or a named one) and CSV in UTF-8, UTF-8 with BOM or GB18030/GBK (detected, or
forced); CRLF; full-width digits and spaces (NFKC); Chinese headers and values; `1,299.00`, `¥1299`, `1299元`;
`2025-09-01`, `2025/9/1`, `2025年9月1日`, Excel serial dates and date cells. Every bad row is named
(row, column, value, reason in the reader's language) and none is left out; `errors_csv` writes the full list.

`preview_devices` is the dry run as typed values (the console shows it before the upload is committed);
`import_devices` commits, or raises ImportRejected with every error.

This module is the feature's front door (the API, the CLI and the console import from here); each idea lives
in its own module:

| module | idea |
|---|---|
| `import_files` | bytes -> header and rows (encodings, CSV, XLSX) |
| `import_columns` | column names, header aliases, a row's cells |
| `import_cells` | text, dates, amounts and enum codes as offices write them |
| `import_devices` | delivery rows checked, then inserted in bulk |
| `import_rooms` | room rows checked, then inserted |
| `import_results` | the preview, the row errors, the error list as CSV |
| `exports` | devices and rooms in the import format |
"""

from __future__ import annotations

from fleet.services.exports import EXPORT_FORMATS, export_devices, export_rooms
from fleet.services.import_cells import as_text, code_lookup, parse_amount, parse_date
from fleet.services.import_columns import (
    DEVICE_COLUMNS,
    DEVICE_REQUIRED,
    HEADER_ALIASES,
    ROOM_COLUMNS,
    ROOM_REQUIRED,
    map_header,
)
from fleet.services.import_devices import import_devices, preview_devices
from fleet.services.import_files import Table, decode_upload, norm, read_table
from fleet.services.import_results import (
    ERROR_HEADER,
    DeviceRow,
    ImportResult,
    Preview,
    Progress,
    RowError,
    errors_csv,
    rejected,
)
from fleet.services.import_rooms import import_rooms, preview_rooms

__all__ = [
    "DEVICE_COLUMNS",
    "DEVICE_REQUIRED",
    "ERROR_HEADER",
    "EXPORT_FORMATS",
    "HEADER_ALIASES",
    "ROOM_COLUMNS",
    "ROOM_REQUIRED",
    "DeviceRow",
    "ImportResult",
    "Preview",
    "Progress",
    "RowError",
    "Table",
    "as_text",
    "code_lookup",
    "decode_upload",
    "errors_csv",
    "export_devices",
    "export_rooms",
    "import_devices",
    "import_rooms",
    "map_header",
    "norm",
    "parse_amount",
    "parse_date",
    "preview_devices",
    "preview_rooms",
    "read_table",
    "rejected",
]
