"""The yearly data-security inspection over a hand-made world: every figure below is worked out by hand.

The clock stands at 2026-09-07 07:55 UTC and a holder unused for 90 days is stale, so the cut-off is
2026-06-09 07:55 UTC.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.domain import wire
from fleet.domain.device_state import pseudonym
from fleet.domain.permissions import SYSTEM
from fleet.persistence.db import unit_of_work
from fleet.persistence.models import ApiToken, Device, DeviceModel, District, School
from fleet.persistence.models_console import ConsoleSession, User
from fleet.persistence.models_mqtt import DeadLetter, DeviceCredential, DeviceState
from fleet.services import audit, privacy
from tests.conftest import Api
from tests.reports.conftest import get_report, rows


def at(y: int, m: int, d: int, h: int = 0) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


@dataclass
class World:
    school_a: int
    school_b: int
    devices: dict[str, int]
    audit_with_student_number: int


async def build_world(sessions: async_sessionmaker[AsyncSession]) -> World:
    async with unit_of_work(sessions) as s:
        d = District(name="Inspection District", created_at=at(2024, 1, 1))
        s.add(d)
        await s.flush()
        schools = {}
        for code in ("sa", "sb"):
            school = School(
                district_id=d.id,
                code=code,
                name=code.upper(),
                uplink_mbps=100,
                timezone="UTC",
                created_at=at(2024, 1, 1),
            )
            s.add(school)
            await s.flush()
            schools[code] = school.id
        a, b = schools["sa"], schools["sb"]
        users = [
            # alice: admin, signed in a week ago: active, not stale.
            ("alice", "admin", True, [], at(2025, 1, 1), at(2026, 9, 1), None),
            # bob: signed in 2026-05-01 (before the cut-off), his session seen on 2026-06-20: not stale.
            ("bob", "technician", False, [a], at(2025, 1, 1), at(2026, 5, 1), None),
            # carol: never signed in since 2025-02-01: stale for 583 days (365 + 212 + 6).
            ("carol", "auditor", False, [b], at(2025, 2, 1), None, None),
            # dave: disabled, holds nothing; listed, not counted, never stale.
            ("dave", "technician", False, [a], at(2025, 1, 1), None, at(2026, 1, 1)),
        ]
        for name, role, wide, sch, created, signed_in, disabled in users:
            u = User(
                username=name,
                password_hash="x",
                role=role,
                district_wide=wide,
                school_ids=sch,
                failed_logins=0,
                created_at=created,
                last_sign_in_at=signed_in,
                disabled_at=disabled,
            )
            s.add(u)
            await s.flush()
            if name == "bob":
                for seen in (at(2026, 6, 20), at(2026, 5, 2)):
                    s.add(
                        ConsoleSession(
                            token_hash=f"h-{seen.isoformat()}",
                            user_id=u.id,
                            csrf_token="c",
                            created_at=seen,
                            last_seen_at=seen,
                            expires_at=seen,
                        )
                    )
        tokens = [
            # (name, prefix, role, district-wide, schools, created, last used, expires, revoked)
            ("ci-bot", "aaaa0001", "it_staff", False, [a, b], at(2026, 1, 1), at(2026, 9, 6), None, None),
            # stale: last used 2026-03-01: 31 days to 1 April, 153 more to 1 September, 6 more: 190.
            ("old-export", "aaaa0002", "procurement", True, [], at(2025, 6, 1), at(2026, 3, 1), None, None),
            # never used, but created a month ago: not stale yet.
            ("never", "aaaa0003", "technician", False, [b], at(2026, 8, 1), None, None, None),
            ("revoked", "aaaa0004", "admin", True, [], at(2025, 1, 1), None, None, at(2026, 2, 1)),
            ("expired", "aaaa0005", "auditor", False, [a], at(2025, 1, 1), None, at(2026, 8, 1), None),
        ]
        for name, prefix, role, wide, sch, created, used, expires, revoked in tokens:
            s.add(
                ApiToken(
                    name=name,
                    prefix=prefix,
                    secret_hash="x",
                    role=role,
                    district_wide=wide,
                    school_ids=sch,
                    created_at=created,
                    last_used_at=used,
                    expires_at=expires,
                    revoked_at=revoked,
                )
            )
        models = {}
        for key, profile in (("LT", "terminal-lt100"), ("R", "robot-edubot-r2")):
            m = DeviceModel(
                vendor="V",
                model_number=key,
                kind="terminal",
                transport="mqtt",
                unit_price=Decimal("1.00"),
                warranty_months=12,
                supplier="S",
                profile_key=profile,
                created_at=at(2024, 1, 1),
            )
            s.add(m)
            await s.flush()
            models[key] = m.id
        devices = {}
        # (name, model, school, status, firmware, session pseudonym)
        for name, model, school, status, fw, session in (
            ("d1", "LT", a, "in_service", "1.0.0", pseudonym("k", "someone")),  # withdrawn 1.0.0
            ("d2", "LT", a, "in_service", "1.2.0", "alice.wang-2014"),  # a raw login where a pseudonym goes
            ("d3", "LT", b, "retired", "1.0.0", None),  # retired: not listed
            ("d4", "LT", b, "in_service", "1.0.0", None),  # withdrawn 1.0.0
            ("d5", "R", b, "in_service", "1.0.0", None),  # another profile: 1.0.0 not withdrawn there
        ):
            dev = Device(
                vendor="V",
                serial_number=f"SN-{name}",
                asset_tag=f"AT-{name}",
                model_id=models[model],
                school_id=school,
                status=status,
                created_at=at(2024, 1, 1),
                updated_at=at(2024, 1, 1),
            )
            s.add(dev)
            await s.flush()
            devices[name] = dev.id
            s.add(DeviceState(device_id=dev.id, firmware_version=fw, session_pseudonym=session))
        for name, created, rotated, revoked, refused, last_refused in (
            # TAB-1: issued a year ago, never rotated: 365 days old.
            ("d1", at(2025, 9, 7), None, None, 0, None),
            ("d2", at(2025, 1, 1), at(2026, 1, 1), None, 0, None),
            ("d3", at(2025, 1, 1), None, at(2026, 4, 1), 0, None),  # revoked and quiet
            ("d4", at(2025, 1, 1), None, at(2026, 5, 1), 42, at(2026, 9, 6)),  # revoked, still knocking
        ):
            s.add(
                DeviceCredential(
                    device_id=devices[name],
                    username=f"TAB-{name[1:]}",
                    school_code="sa" if name in ("d1", "d2") else "sb",
                    password_hash="x",
                    created_at=created,
                    rotated_at=rotated,
                    revoked_at=revoked,
                    refused_connects=refused,
                    last_refused_at=last_refused,
                )
            )
        login = json.dumps({"v": 1, "seq": 1, "ts": 1, "type": "login", "user": "bob.li"}).encode()
        for payload in (login, wire.redact_user(login)):
            s.add(
                DeadLetter(
                    received_at=at(2026, 9, 1),
                    reason="schema",
                    topic="t",
                    identity="TAB-1",
                    payload=payload,
                    payload_size=len(login),
                )
            )
        entry = audit.record(
            s,
            principal=SYSTEM,
            at=at(2026, 9, 1),
            action="device.update",
            object_type="device",
            object_id=devices["d1"],
            summary="lent to student G11010519491231002X",
        )
        audit.record(s, principal=SYSTEM, at=at(2026, 9, 2), action="x", object_type="y", object_id=1)
        await s.flush()
        entry_id = entry.id
    # The pseudonym key history: k1 from 2025-09-01 (seen again in October: no switch), then the shipped
    # placeholder from 2026-01-10.
    await privacy.note_pseudonym_key(sessions, "k1", at(2025, 9, 1))
    await privacy.note_pseudonym_key(sessions, "k1", at(2025, 10, 1))
    await privacy.note_pseudonym_key(sessions, privacy.DEFAULT_PSEUDONYM_KEY, at(2026, 1, 10))
    return World(a, b, devices, entry_id)


@pytest.fixture
async def world(rapi: Api) -> World:
    return await build_world(rapi.sessions)


async def inspection(api: Api, **kw: Any) -> dict[str, Any]:
    # A first call records the caller's token as used, so its last use is in the report that follows.
    await api.client.get("/api/v1/reports", headers=await api.as_(kw.get("role", "admin"), kw.get("schools")))
    return await get_report(api, "inspection", **kw)


async def test_who_holds_access_by_school_and_role(rapi: Api, world: World) -> None:
    body = await inspection(rapi)
    # Active holders: alice and the caller's token (admin, district-wide), old-export (procurement,
    # district-wide), bob (technician, sa), ci-bot (it_staff, sa and sb), carol (auditor, sb), never
    # (technician, sb). dave is disabled; revoked and expired tokens give no access.
    assert [(r["scope"], r["role"], r["users"], r["tokens"]) for r in rows(body, "access_by_role")] == [
        ("district-wide", "admin", 1, 1),
        ("district-wide", "procurement", 0, 1),
        ("sa", "technician", 1, 0),
        ("sa", "it_staff", 0, 1),
        ("sb", "technician", 0, 1),
        ("sb", "it_staff", 0, 1),
        ("sb", "auditor", 1, 0),
    ]
    users = {r["name"]: r for r in rows(body, "users")}
    assert users["bob"]["last_used_at"] == "2026-06-20T00:00:00+00:00"  # the session, not the sign-in
    assert users["dave"]["state"] == "disabled" and users["dave"]["stale"] is False
    assert users["carol"]["stale"] is True and users["alice"]["stale"] is False
    tokens = {r["name"]: r for r in rows(body, "tokens")}
    assert set(tokens) == {"ci-bot", "old-export", "never", "admin-()"}
    assert tokens["ci-bot"]["scope"] == "sa, sb" and tokens["ci-bot"]["prefix"] == "aaaa0001"
    assert tokens["admin-()"]["last_used_at"] == "2026-09-07T07:55:00+00:00"
    s = body["summary"]
    assert (s["users"], s["tokens"], s["tokens_revoked"], s["tokens_expired"]) == (3, 4, 1, 1)


async def test_stale_access_is_what_nobody_used_for_90_days(rapi: Api, world: World) -> None:
    body = await inspection(rapi)
    assert [(r["name"], r["days_unused"], r["last_used_at"]) for r in rows(body, "stale")] == [
        ("carol", 583, None),  # never signed in: counted from 2025-02-01
        ("old-export", 190, "2026-03-01T00:00:00+00:00"),
    ]
    assert body["summary"]["stale"] == 2 and body["summary"]["stale_days"] == 90


async def test_credentials_never_rotated_and_revoked_devices_still_knocking(rapi: Api, world: World) -> None:
    body = await inspection(rapi)
    assert [(r["identity"], r["age_days"]) for r in rows(body, "never_rotated")] == [("TAB-1", 365)]
    assert [
        (r["identity"], r["asset_tag"], r["school_code"], r["refused"], r["last_refused_at"])
        for r in rows(body, "revoked_connecting")
    ] == [("TAB-4", "AT-d4", "sb", 42, "2026-09-06T00:00:00+00:00")]


async def test_devices_on_withdrawn_firmware(rapi: Api, world: World) -> None:
    body = await inspection(rapi)
    # d1 and d4 run terminal-lt100 1.0.0, which the shipped profile withdraws; d3 is retired; d5's profile
    # withdraws nothing; d2 runs 1.2.0.
    got = rows(body, "withdrawn_firmware")
    assert [(r["asset_tag"], r["version"], r["withdrawn_since"], r["target"]) for r in got] == [
        ("AT-d1", "1.0.0", "2026-03-02", "1.2.0"),
        ("AT-d4", "1.0.0", "2026-03-02", "1.2.0"),
    ]
    assert "certificate" in got[0]["reason"]


async def test_privacy_scan_finds_identifiers_and_names_rows_not_values(rapi: Api, world: World) -> None:
    body = await inspection(rapi)
    scans = {(r["table"], r["column"]): r for r in rows(body, "privacy")}
    assert scans[("device_state", "session_pseudonym")]["flagged"] == 1
    assert scans[("device_state", "session_pseudonym")]["row_ids"] == str(world.devices["d2"])
    assert scans[("dead_letters", "payload")]["rows"] == 2  # the redacted copy passes
    assert scans[("dead_letters", "payload")]["findings"] == "Login reference"
    assert scans[("audit_log", "summary")]["row_ids"] == str(world.audit_with_student_number)
    assert scans[("audit_log", "summary")]["findings"] == "National student number"
    clean = [k for k, r in scans.items() if r["flagged"] == 0]
    assert ("devices", "order_number") in clean and ("users", "username") in clean
    assert body["summary"]["privacy_findings"] == 3
    raw = json.dumps(body)
    assert "G11010519491231002X" not in raw and "alice.wang-2014" not in raw and "bob.li" not in raw


async def test_pseudonym_key_history_and_the_placeholder(rapi: Api, world: World) -> None:
    s = (await inspection(rapi))["summary"]
    assert s["pseudonym_key_since"] == "2026-01-10T00:00:00+00:00"
    assert s["pseudonym_key_changes"] == 1
    assert s["pseudonym_key_default"] is True


async def test_the_audit_chain_is_verified_and_a_break_is_placed(rapi: Api, world: World) -> None:
    body = await inspection(rapi)
    (chain,) = rows(body, "audit_chain")
    # Two fixture records, plus one per token the test created (token.create is audited).
    assert chain["intact"] is True and chain["break_seq"] is None and chain["checked"] >= 2
    assert body["summary"]["audit_chain_ok"] is True
    # 2 stale + 1 never rotated + 1 knocking + 2 withdrawn + 3 privacy columns + the placeholder key
    assert body["summary"]["findings"] == 10
    async with unit_of_work(rapi.sessions) as s:
        await s.execute(
            text("UPDATE audit_log SET summary = 'edited' WHERE id = :id"),
            {"id": world.audit_with_student_number},
        )
    body = await get_report(rapi, "inspection")
    (chain,) = rows(body, "audit_chain")
    assert (chain["intact"], chain["reason"]) == (False, "edited")
    assert (
        body["summary"]["audit_chain_ok"] is False and body["summary"]["findings"] == 10
    )  # privacy hit gone


async def test_a_school_scoped_auditor_sees_their_schools_and_no_district_checks(
    rapi: Api, world: World
) -> None:
    body = await inspection(rapi, role="auditor", schools=(world.school_a,))
    assert {r["scope"] for r in rows(body, "access_by_role")} == {"district-wide", "sa"}
    assert "carol" not in {r["name"] for r in rows(body, "users")}  # sb only
    assert [r["asset_tag"] for r in rows(body, "withdrawn_firmware")] == ["AT-d1"]
    assert rows(body, "revoked_connecting") == []
    assert rows(body, "privacy") == [] and rows(body, "audit_chain") == []
    assert body["summary"]["audit_chain_ok"] is None and body["summary"]["privacy_findings"] is None
    ci = next(r for r in rows(body, "tokens") if r["name"] == "ci-bot")
    assert ci["scope"] == "sa (+1)"  # the other school is not named


@pytest.mark.parametrize("role", ["it_staff", "procurement", "technician"])
async def test_only_admins_and_auditors_may_run_it(rapi: Api, world: World, role: str) -> None:
    h = await rapi.as_(role)
    r = await rapi.client.get("/api/v1/reports/inspection", headers=h)
    assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
    listed = await rapi.client.get("/api/v1/reports", headers=h)
    if listed.status_code == 200:
        assert "inspection" not in {x["name"] for x in listed.json()["reports"]}
    listed = await rapi.client.get("/api/v1/reports", headers=await rapi.as_("auditor"))
    assert "inspection" in {x["name"] for x in listed.json()["reports"]}


async def test_every_format_in_both_languages(rapi: Api, world: World) -> None:
    h = await rapi.admin()
    for lang in ("en", "zh-CN"):
        for fmt in ("json", "csv", "xlsx", "html"):
            r = await rapi.client.get(
                "/api/v1/reports/inspection", params={"format": fmt, "lang": lang}, headers=h
            )
            assert r.status_code == 200, (lang, fmt, r.text[:300])
            if fmt == "csv":
                table = list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))
                assert any(row[0].startswith("# ") and row[1:2] == ["stale"] for row in table if row)
            if fmt == "xlsx":
                wb = load_workbook(io.BytesIO(r.content))
                assert len(wb.sheetnames) == 10
                assert all(len(n) <= 31 for n in wb.sheetnames)
            if fmt == "html" and lang == "zh-CN":
                page = r.text
                assert "数据安全检查" in page and "全国学籍号" in page
                assert "Who holds access" not in page and "Never rotated" not in page
    pdf = await rapi.client.get(
        "/api/v1/reports/inspection", params={"format": "pdf", "lang": "zh-CN"}, headers=h
    )
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF"), pdf.text[:300]
    section = await rapi.client.get(
        "/api/v1/reports/inspection", params={"format": "csv", "section": "never_rotated"}, headers=h
    )
    assert section.text.splitlines()[:2] == [
        "identity,asset_tag,school_code,issued_at,age_days",
        ("TAB-1,AT-d1,sa,2025-09-07T00:00:00+00:00,365"),
    ]


def test_the_cli_writes_the_inspection(tmp_path: Path) -> None:
    env = {**os.environ, "LABFLEET_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db", "COLUMNS": "120"}
    labfleet = str(Path(sys.executable).parent / "labfleet")
    subprocess.run([labfleet, "seed", "demo"], env=env, check=True, capture_output=True, timeout=180)
    proc = subprocess.run(
        [labfleet, "report", "inspection", "--format", "json", "--lang", "zh-CN"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert body["title"] == "数据安全检查" and body["summary"]["audit_chain_ok"] is True
    assert "access" in proc.stderr and "audit chain" in proc.stderr  # the progress bar's stages
