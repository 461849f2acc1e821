"""`labfleet import` on any file a user might pick: a clear message and exit 1, never a traceback; the full
error list with --errors-out; XLSX and GB18030 read."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
from openpyxl import Workbook

from tests.cli.test_cli import run
from tests.csvgen import delivery_csv


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "LABFLEET_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db", "COLUMNS": "160"}
    run(env, "seed", "demo")
    return env


def test_no_file_gives_a_traceback(env: dict[str, str], tmp_path: Path) -> None:
    cases = {
        "random.csv": bytes(range(256)) * 8,
        "fake.xlsx": b"PK\x03\x04" + b"\x00" * 64,
        "old.xls": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64,
        "quote.csv": b'serial_number,asset_tag\n"x,y\n',
        "empty.csv": b"",
        "header.csv": b"serial_number\n",
        "text.xlsx": b"serial_number,asset_tag\n",
    }
    for name, body in cases.items():
        path = tmp_path / name
        path.write_bytes(body)
        proc = run(env, "import", "devices", str(path), ok=False)
        assert proc.returncode in (1, 2), (name, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout, (name, proc.stderr)
        assert "Error" in proc.stderr or "rejected" in proc.stderr, (name, proc.stderr)


def test_errors_out_has_every_bad_row_and_the_terminal_says_it_cut(
    env: dict[str, str], tmp_path: Path
) -> None:
    text = delivery_csv(400, school_code="north-primary", room="Classroom 1").replace(",329.00,", ",abc,")
    path = tmp_path / "bad.csv"
    path.write_bytes(text.encode("gb18030"))
    proc = run(env, "import", "devices", str(path), ok=False)
    assert proc.returncode == 1
    assert "400 of 400 rows" in proc.stderr and "--errors-out" in proc.stderr and "100 of 400" in proc.stderr
    out = tmp_path / "errors.csv"
    proc = run(env, "import", "devices", str(path), "--errors-out", str(out), "--lang", "zh-CN", ok=False)
    assert "400" in proc.stderr and "导入被拒绝" in proc.stderr
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert rows[0] == ["行", "列", "值", "原因"] and len(rows) == 401
    assert rows[1][:3] == ["2", "unit_cost", "abc"] and "金额" in rows[1][3]


def test_xlsx_import_and_export(env: dict[str, str], tmp_path: Path) -> None:
    lines = delivery_csv(50, school_code="north-primary", room="Classroom 1").splitlines()
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    for line in lines:
        ws.append(line.split(","))
    path = tmp_path / "delivery.xlsx"
    wb.save(path)
    proc = run(env, "import", "devices", str(path), "--dry-run")
    assert "would import 50 devices" in proc.stdout
    run(env, "import", "devices", str(path))
    out = tmp_path / "out.xlsx"
    run(env, "export", "devices", "--format", "xlsx", "--out", str(out))
    assert out.read_bytes().startswith(b"PK")
    csv_out = run(env, "export", "rooms", "--bom").stdout
    assert csv_out.startswith("\ufeff")
