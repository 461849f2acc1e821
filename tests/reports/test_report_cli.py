"""`labfleet report` as a user runs it: a real process, a real SQLite file."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from openpyxl import load_workbook

LABFLEET = str(Path(sys.executable).parent / "labfleet")


def run(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [LABFLEET, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    if ok:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def test_report_command_writes_each_format_and_the_monthly_set(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LABFLEET_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
        "COLUMNS": "120",
        "LABFLEET_REPORTS__FOLDER": str(tmp_path / "monthly"),
        "LABFLEET_REPORTS__MONTHLY_FORMATS": '["json"]',
    }
    run(env, "seed", "demo")
    proc = run(env, "report", "inventory", "--format", "json", "--school", "1", "--end", "2026-06-30")
    body = json.loads(proc.stdout)
    assert body["range"]["end"] == "2026-06-30" and "school" in body["filters"]
    assert "devices" in proc.stderr and "rendering" in proc.stderr  # the progress bar
    out = tmp_path / "util.xlsx"
    proc = run(env, "report", "utilisation", "--format", "xlsx", "--out", str(out))
    assert f"to {out}" in proc.stderr
    assert load_workbook(out).sheetnames[0] == "Summary"
    proc = run(env, "report", "screentime", "--format", "csv", "--section", "by_school", "--lang", "en")
    assert proc.stdout.splitlines()[0].startswith("school_code,school,terminals,terminal_days,use_minutes")
    proc = run(env, "report", "coverage", "--format", "csv", "--section", "plan")
    assert next(r["metric"] for r in csv.DictReader(io.StringIO(proc.stdout))) == "Smart classrooms equipped"
    assert run(env, "report", "coverage", "--format", "docx", ok=False).returncode == 2
    assert run(env, "report", "coverage", "--format", "pdf", ok=False).returncode == 2  # needs --out
    bad = run(env, "report", "nonsense", ok=False)
    assert bad.returncode == 1 and "no report named 'nonsense'" in bad.stderr
    proc = run(env, "report", "monthly", "--month", "2026-08")
    written = proc.stdout.split()
    # The seven reports of the default monthly set (screentime among them), one JSON each.
    assert len(written) == 7 and all("district-1/2026-08/" in p for p in written)
    assert any(p.rsplit("/", 1)[-1].startswith("screentime") for p in written), written
