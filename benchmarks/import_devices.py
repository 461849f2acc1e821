"""Benchmark: import a 10,000-device delivery, as CSV and as XLSX, into SQLite through the real import
service.

Baselines in the same run, so a figure taken on a loaded machine still says something: reading the same
file and nothing else (the stdlib csv reader over the text; openpyxl's read-only iteration over the
workbook), and the raw database floor, a plain sqlite3 `executemany` of the same 10,000 rows into the same
migrated schema (no validation, no audit, no ORM). Prints rows/s for each, the ratios and the load average,
then one JSON line. Targets (issue 15): >= 10,000 rows/s for CSV, >= 3,000 rows/s for XLSX.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text as sql

from fleet.domain.clock import SystemClock
from fleet.domain.permissions import SYSTEM
from fleet.persistence.db import create_engine, session_factory, unit_of_work, upgrade_sync
from fleet.services import imports
from fleet.services.inventory import DeviceModelService, DistrictService, RoomService, SchoolService
from tests.csvgen import delivery_csv

ROWS = 10_000
TARGET_CSV_ROWS_PER_S = 10_000
TARGET_XLSX_ROWS_PER_S = 3_000


async def setup(url: str) -> None:
    engine = create_engine(url)
    clock = SystemClock()
    async with unit_of_work(session_factory(engine)) as s:
        d = await DistrictService(s, SYSTEM, clock).create({"name": "Bench"})
        school = await SchoolService(s, SYSTEM, clock).create(
            {"district_id": d.id, "code": "school-a", "name": "A", "uplink_mbps": 100, "timezone": "UTC"}
        )
        await RoomService(s, SYSTEM, clock).create(
            {
                "school_id": school.id,
                "name": "Room 1",
                "kind": "smart_classroom",
                "tier": None,
                "capacity": 30,
            }
        )
        await DeviceModelService(s, SYSTEM, clock).create(
            {
                "vendor": "EduTech",
                "model_number": "LT-100",
                "kind": "terminal",
                "transport": "mqtt",
                "unit_price": Decimal("329.00"),
                "warranty_months": 36,
                "supplier": "S",
                "profile_key": None,
            }
        )
    await engine.dispose()


def xlsx_of(text: str) -> bytes:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("delivery")
    for line in text.splitlines():
        ws.append(line.split(","))
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


async def run_import(url: str, data: bytes, filename: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, SQLite's thread included) from the upload's bytes to the
    commit. On a shared machine the CPU seconds say what a quiet one would take."""
    engine = create_engine(url)
    t0, c0 = time.perf_counter(), time.process_time()
    async with unit_of_work(session_factory(engine)) as s:
        result = await imports.import_devices(s, SYSTEM, SystemClock(), data, filename=filename)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert result.created == ROWS
    async with unit_of_work(session_factory(engine)) as s:
        # Nothing dropped on the way: every device and its lifecycle row are there.
        devices = (await s.execute(sql("SELECT count(*) FROM devices"))).scalar_one()
        lifecycle = (await s.execute(sql("SELECT count(*) FROM device_transitions"))).scalar_one()
    await engine.dispose()
    assert devices == lifecycle == ROWS, (devices, lifecycle)
    return elapsed, cpu


def raw_floor(path: Path) -> float:
    now = datetime.now(UTC).isoformat()
    rows = [
        (
            "EduTech",
            f"RAW-{i}",
            f"RAW-TAG-{i}",
            1,
            1,
            1,
            "received",
            "PO-1",
            "2026-08-01",
            "329.00",
            "grant",
            "owned",
            now,
            now,
        )
        for i in range(ROWS)
    ]
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    t0 = time.perf_counter()
    conn.executemany(
        "INSERT INTO devices (vendor, serial_number, asset_tag, model_id, school_id, room_id, status, "
        "order_number, purchase_date, unit_cost, funding_source, ownership, created_at, updated_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    conn.commit()
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def read_floor(text: str, book: bytes) -> tuple[float, float]:
    """Seconds to parse the CSV text with the stdlib reader, and to iterate the workbook with openpyxl's
    read-only reader: reading the file and nothing else."""
    from openpyxl import load_workbook

    t0 = time.perf_counter()
    n_csv = sum(1 for _row in csv.reader(io.StringIO(text)))
    t1 = time.perf_counter()
    wb = load_workbook(io.BytesIO(book), read_only=True, data_only=True)
    n_xlsx = sum(1 for _row in wb.worksheets[0].iter_rows(values_only=True))
    wb.close()
    t2 = time.perf_counter()
    assert n_csv == n_xlsx == ROWS + 1
    return t1 - t0, t2 - t1


def main() -> None:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        csv_db, xlsx_db, raw_db = Path(tmp) / "csv.db", Path(tmp) / "xlsx.db", Path(tmp) / "raw.db"
        for db in (csv_db, xlsx_db, raw_db):
            upgrade_sync(f"sqlite+aiosqlite:///{db}")
            asyncio.run(setup(f"sqlite+aiosqlite:///{db}"))
        text = delivery_csv(ROWS)
        book = xlsx_of(text)
        baseline_s = raw_floor(raw_db)
        csv_parse_s, openpyxl_s = read_floor(text, book)
        csv_s, csv_cpu = asyncio.run(
            run_import(f"sqlite+aiosqlite:///{csv_db}", text.encode(), "delivery.csv")
        )
        xlsx_s, xlsx_cpu = asyncio.run(run_import(f"sqlite+aiosqlite:///{xlsx_db}", book, "delivery.xlsx"))
    load = [round(max(a, b), 2) for a, b in zip(load_before, os.getloadavg(), strict=True)]
    csv_rate, xlsx_rate, base_rate = ROWS / csv_s, ROWS / xlsx_s, ROWS / baseline_s
    parse_rate, openpyxl_rate = ROWS / csv_parse_s, ROWS / openpyxl_s
    ratios = {
        "csv_import_vs_csv_parse": round(csv_rate / parse_rate, 4),
        "xlsx_import_vs_openpyxl_read": round(xlsx_rate / openpyxl_rate, 4),
        "csv_import_vs_sqlite_executemany": round(csv_rate / base_rate, 4),
        "xlsx_import_vs_sqlite_executemany": round(xlsx_rate / base_rate, 4),
    }
    print(f"load average (1, 5, 15 min; the higher of start and end): {load[0]} {load[1]} {load[2]}")
    print(
        f"CSV import of {ROWS} devices (read, validate every row, insert, lifecycle rows, audit): "
        f"{csv_s:.2f} s = {csv_rate:,.0f} rows/s (target >= {TARGET_CSV_ROWS_PER_S:,})"
    )
    print(
        f"XLSX import of the same rows: {xlsx_s:.2f} s = {xlsx_rate:,.0f} rows/s "
        f"(target >= {TARGET_XLSX_ROWS_PER_S:,})"
    )
    print(
        f"CPU seconds (this process, SQLite's thread included): CSV {csv_cpu:.2f} s = "
        f"{ROWS / csv_cpu:,.0f} rows per CPU-second, XLSX {xlsx_cpu:.2f} s = {ROWS / xlsx_cpu:,.0f}"
    )
    print(f"baseline stdlib csv.reader over the same text: {parse_rate:,.0f} rows/s")
    print(f"baseline openpyxl read-only iteration of the same workbook: {openpyxl_rate:,.0f} rows/s")
    print(f"baseline raw sqlite3 executemany of the same rows: {baseline_s:.3f} s = {base_rate:,.0f} rows/s")
    print(
        f"ratios: csv import / csv parse {ratios['csv_import_vs_csv_parse']:.3f}, "
        f"xlsx import / openpyxl read {ratios['xlsx_import_vs_openpyxl_read']:.3f}, "
        f"csv import / raw insert {ratios['csv_import_vs_sqlite_executemany']:.3f}"
    )
    print(
        json.dumps(
            {
                "benchmark": "import_devices",
                "rows": ROWS,
                "rows_per_s_csv": round(csv_rate),
                "rows_per_s_xlsx": round(xlsx_rate),
                "csv_seconds": round(csv_s, 3),
                "xlsx_seconds": round(xlsx_s, 3),
                "csv_cpu_seconds": round(csv_cpu, 3),
                "xlsx_cpu_seconds": round(xlsx_cpu, 3),
                "baseline_rows_per_s": {
                    "csv_parse": round(parse_rate),
                    "openpyxl_read": round(openpyxl_rate),
                    "sqlite_executemany": round(base_rate),
                },
                "ratios": ratios,
                "loadavg": load,
                "cpus": os.cpu_count(),
                "target_csv_rows_per_s": TARGET_CSV_ROWS_PER_S,
                "target_xlsx_rows_per_s": TARGET_XLSX_ROWS_PER_S,
                "meets_target": csv_rate >= TARGET_CSV_ROWS_PER_S and xlsx_rate >= TARGET_XLSX_ROWS_PER_S,
            }
        )
    )


if __name__ == "__main__":
    main()
