"""The audit log is a hash chain (issue 16, point 6): an edited, deleted or reordered record is found and
placed; concurrent writers never fork the chain; inspectors export it as CSV (with BOM) or XLSX."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import openpyxl
from sqlalchemy import select, text

from fleet.domain.auditchain import GENESIS, record_hash
from fleet.persistence.db import upgrade_sync
from fleet.persistence.models import AuditEntry
from tests.conftest import Api, off_loop
from tests.factories import build_world

V1 = "/api/v1"
LABFLEET = str(Path(sys.executable).parent / "labfleet")


async def _verify(api: Api) -> dict:
    r = await api.client.get(f"{V1}/audit/verify", headers=await api.admin())
    assert r.status_code == 200, r.text
    return r.json()


async def _sql(api: Api, *statements: str) -> None:
    async with api.sessions() as session:
        for stmt in statements:
            await session.execute(text(stmt))
        await session.commit()


async def test_every_record_points_back_to_the_one_before(api_any: Api) -> None:
    await build_world(api_any)
    h = await api_any.admin()
    items = (await api_any.client.get(f"{V1}/audit", params={"limit": 500}, headers=h)).json()["items"]
    assert len(items) >= 10
    assert [i["seq"] for i in items] == list(range(1, len(items) + 1))
    assert items[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(items))
    report = await _verify(api_any)
    assert report == {
        "ok": True,
        "checked": len(items),
        "last_seq": len(items),
        "last_hash": items[-1]["hash"],
        "break": None,
    }


async def test_an_edited_record_is_found_and_placed(api_any: Api) -> None:
    await build_world(api_any)
    await _sql(api_any, "UPDATE audit_log SET summary = 'nothing happened' WHERE seq = 4")
    report = await _verify(api_any)
    assert not report["ok"]
    assert report["break"]["seq"] == 4 and report["break"]["reason"] == "edited"


async def test_an_edited_time_is_found(api_any: Api) -> None:
    await build_world(api_any)
    await _sql(api_any, "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2")
    report = await _verify(api_any)
    assert report["break"]["seq"] == 2 and report["break"]["reason"] == "edited"


async def test_a_deleted_record_is_found_and_placed(api_any: Api) -> None:
    await build_world(api_any)
    await _sql(api_any, "DELETE FROM audit_log WHERE seq = 5")
    report = await _verify(api_any)
    assert report["break"]["seq"] == 5 and report["break"]["reason"] == "missing"


async def test_a_deleted_last_record_is_found(api_any: Api) -> None:
    await build_world(api_any)
    last = (await _verify(api_any))["last_seq"]
    await _sql(api_any, f"DELETE FROM audit_log WHERE seq = {last}")
    report = await _verify(api_any)
    assert report["break"]["seq"] == last and report["break"]["reason"] == "tail_missing"


async def test_reordered_records_are_found(api_any: Api) -> None:
    """Two records' rows swapped whole (content, seq and hashes): the order of the rows gives it away."""
    await build_world(api_any)
    cols = (
        "at, actor, action, object_type, object_id, school_id, before, after, summary, seq, prev_hash, hash"
    )
    await _sql(
        api_any,
        f"CREATE TEMPORARY TABLE swap AS SELECT id, {cols} FROM audit_log WHERE seq IN (3, 6)",
        "UPDATE audit_log SET seq = -seq WHERE seq IN (3, 6)",  # the unique index on seq, while swapping
        *(
            f"UPDATE audit_log SET {c} = (SELECT s.{c} FROM swap s WHERE s.id <> audit_log.id) "
            f"WHERE id IN (SELECT id FROM swap)"
            for c in cols.split(", ")
        ),
    )
    report = await _verify(api_any)
    assert not report["ok"] and report["break"]["reason"] == "reordered", report


async def test_a_rewritten_record_with_a_recomputed_hash_breaks_the_next_link(api_any: Api) -> None:
    """Rewriting a record and recomputing its own hash still breaks the link from the next record."""
    await build_world(api_any)
    await _sql(api_any, "UPDATE audit_log SET summary = 'forged' WHERE seq = 3")
    # A forger who knows the algorithm recomputes the hash of the record they changed ...
    async with api_any.sessions() as session:
        e = (await session.execute(select(AuditEntry).where(AuditEntry.seq == 3))).scalar_one()
        forged = record_hash(
            seq=e.seq,
            prev_hash=e.prev_hash,
            at=e.at,
            actor=e.actor,
            action=e.action,
            object_type=e.object_type,
            object_id=e.object_id,
            school_id=e.school_id,
            before=e.before,
            after=e.after,
            summary=e.summary,
        )
    await _sql(api_any, f"UPDATE audit_log SET hash = '{forged}' WHERE seq = 3")
    report = await _verify(api_any)
    # ... and the next record no longer points back to it.
    assert report["break"]["seq"] == 4 and report["break"]["reason"] == "prev_mismatch"


async def test_concurrent_writers_never_fork_the_chain(api_any: Api) -> None:
    w = await build_world(api_any)
    h = await api_any.admin()

    async def make_room(i: int) -> int:
        r = await api_any.client.post(
            f"{V1}/rooms",
            json={"school_id": w.school_a, "name": f"Lab {i}", "kind": "digital_lab"},
            headers=h,
        )
        return r.status_code

    codes = await asyncio.gather(*(make_room(i) for i in range(24)))
    assert all(c in (201, 503) for c in codes), codes
    assert codes.count(201) >= 1
    report = await _verify(api_any)
    assert report["ok"], report
    async with api_any.sessions() as session:
        seqs = [r[0] for r in (await session.execute(text("SELECT seq FROM audit_log ORDER BY id"))).all()]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_verify_needs_a_district_wide_reader(api: Api) -> None:
    w = await build_world(api)
    r = await api.client.get(f"{V1}/audit/verify", headers=await api.as_("auditor", (w.school_a,)))
    assert r.status_code == 403
    r = await api.client.get(f"{V1}/audit/verify", headers=await api.as_("technician", (w.school_a,)))
    assert r.status_code == 403
    r = await api.client.get(f"{V1}/audit/verify", headers=await api.as_("auditor"))
    assert r.status_code == 200 and r.json()["ok"]


async def test_inspectors_export_csv_with_bom_and_xlsx(api: Api) -> None:
    w = await build_world(api)
    # A summary an attacker shaped like a formula stays text in the inspector's spreadsheet.
    r = await api.client.patch(
        f"{V1}/rooms/{w.room_a}", json={"name": '=HYPERLINK("http://x")'}, headers=await api.admin()
    )
    assert r.status_code == 200
    h = await api.as_("auditor")
    r = await api.client.get(f"{V1}/audit/export", params={"format": "csv"}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["seq", "id", "at"] and rows[0][-2:] == ["prev_hash", "hash"]
    assert [int(x[0]) for x in rows[1:]] == list(range(1, len(rows)))
    verify = await _verify(api)
    assert rows[-1][-1] == verify["last_hash"]

    r = await api.client.get(f"{V1}/audit/export", params={"format": "xlsx"}, headers=h)
    assert r.status_code == 200 and "spreadsheetml" in r.headers["content-type"]
    wb = openpyxl.load_workbook(io.BytesIO(r.content))
    sheet = list(wb.active.iter_rows(values_only=True))
    assert len(sheet) == len(rows) and sheet[-1][-1] == verify["last_hash"]
    assert not any(isinstance(v, str) and v.startswith("=") for row in sheet for v in row) or all(
        c.data_type == "s" for row in wb.active.iter_rows() for c in row if str(c.value).startswith("=")
    )

    # A school-scoped auditor exports its school's records only.
    r = await api.client.get(f"{V1}/audit/export", headers=await api.as_("auditor", (w.school_b,)))
    scoped = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert 1 < len(scoped) < len(rows)
    assert {row[7] for row in scoped[1:]} == {str(w.school_b)}
    r = await api.client.get(f"{V1}/audit/export", params={"format": "pdf"}, headers=h)
    assert r.status_code == 422


def test_cli_verify_and_export_find_a_tampered_record(tmp_path: Path) -> None:
    env = {**os.environ, "LABFLEET_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/a.db", "COLUMNS": "150"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LABFLEET, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    assert run("seed", "demo").returncode == 0
    ok = run("audit", "verify", "--json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout.strip().splitlines()[-1])
    assert doc["ok"] and doc["checked"] == doc["last_seq"] > 0
    out = tmp_path / "audit.xlsx"
    exp = run("audit", "export", "--format", "xlsx", "--out", str(out))
    assert exp.returncode == 0, exp.stderr
    assert openpyxl.load_workbook(out).active.max_row == doc["checked"] + 1
    csv_out = run("audit", "export")
    assert csv_out.returncode == 0 and csv_out.stdout.startswith("\ufeffseq,id,at")

    with sqlite3.connect(tmp_path / "a.db") as db:
        db.execute("UPDATE audit_log SET summary = 'tampered' WHERE seq = 2")
    bad = run("audit", "verify")
    assert bad.returncode == 1
    assert "broken at seq 2" in bad.stderr and "edited" in bad.stderr


def test_the_migration_chains_existing_records(tmp_path: Path) -> None:
    """Records written before the chain existed are chained in id order by migration 0050."""
    url = f"sqlite+aiosqlite:///{tmp_path}/m.db"
    off_loop(lambda: upgrade_sync(url, "0045"))
    with sqlite3.connect(tmp_path / "m.db") as db:
        for i in range(5):
            db.execute(
                "INSERT INTO audit_log (at, actor, action, object_type, object_id, before, after) "
                "VALUES (?, 'cli', 'create', 'room', ?, NULL, ?)",
                (f"2026-09-0{i + 1} 08:00:00.000000", str(i), json.dumps({"name": f"r{i}"})),
            )
    off_loop(lambda: upgrade_sync(url))
    env = {**os.environ, "LABFLEET_DATABASE_URL": url}
    proc = subprocess.run(
        [LABFLEET, "audit", "verify", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["checked"] == 5
