"""Privacy facts for the security inspection: when the pseudonym key last changed, and a scan of every
column that could hold a student identifier.

Reads only, except `note_pseudonym_key`, which the ingest workers call at start (they are what uses the key).
Nothing here returns or logs a flagged value: findings name the table, column and row ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.domain.clock import as_utc
from fleet.domain.privacy import Finding, identifiers_in, is_pseudonym, key_fingerprint
from fleet.persistence.models import ApiToken, AuditEntry, Device, PseudonymKeyEpoch
from fleet.persistence.models_console import User
from fleet.persistence.models_mqtt import Alert, DeadLetter, DeviceCommand, DeviceState
from fleet.settings import Settings

# Rows read per round trip: bounded memory whatever the table's size.
BATCH = 2000
# Row ids shown per flagged column: enough to find them, short enough for a printed page.
MAX_ROW_IDS = 5
# The key a fresh install runs with until someone sets LABFLEET_PSEUDONYM_KEY: anyone can recompute its
# pseudonyms, so the inspection flags it.
DEFAULT_PSEUDONYM_KEY: str = Settings.model_fields["pseudonym_key"].default
# What wire.redact_user leaves in place of a login reference in a dead letter's payload.
REDACTED_USER = "<removed>"


async def note_pseudonym_key(sessions: async_sessionmaker[AsyncSession], key: str, now: datetime) -> bool:
    """Record a switch to `key` (by fingerprint) when a process starts with another key than the last one
    recorded; True when it was recorded."""
    fp = key_fingerprint(key)
    async with sessions() as s:
        last = (
            await s.execute(
                select(PseudonymKeyEpoch.fingerprint).order_by(PseudonymKeyEpoch.id.desc()).limit(1)
            )
        ).scalar()
        if last == fp:
            return False
        s.add(PseudonymKeyEpoch(fingerprint=fp, first_seen_at=now))
        await s.commit()
    return True


@dataclass(frozen=True, slots=True)
class KeyHistory:
    current_since: datetime | None  # when the key last changed (first recorded); None: none recorded yet
    changes: int  # switches recorded before the current key
    is_default: bool | None  # the current key is the shipped placeholder; None: none recorded yet


async def key_history(session: AsyncSession) -> KeyHistory:
    """The pseudonym keys the ingest workers have run with, oldest first, as switches between them."""
    rows = (
        await session.execute(
            select(PseudonymKeyEpoch.fingerprint, PseudonymKeyEpoch.first_seen_at).order_by(
                PseudonymKeyEpoch.id
            )
        )
    ).all()
    switches: list[tuple[str, datetime]] = []
    for fp, at in rows:
        if not switches or switches[-1][0] != fp:  # two workers starting together may both record a switch
            switches.append((fp, as_utc(at)))
    if not switches:
        return KeyHistory(None, 0, None)
    current, since = switches[-1]
    return KeyHistory(since, len(switches) - 1, current == key_fingerprint(DEFAULT_PSEUDONYM_KEY))


@dataclass(slots=True)
class ColumnScan:
    """One column's scan: rows with a value, rows flagged, why, and the first flagged rows' ids."""

    table: str
    column: str
    rows: int = 0
    flagged: int = 0
    findings: set[Finding] = field(default_factory=set)
    row_ids: list[Any] = field(default_factory=list)

    def flag(self, row_id: Any, kinds: set[Finding]) -> None:
        self.flagged += 1
        self.findings |= kinds
        if len(self.row_ids) < MAX_ROW_IDS:
            self.row_ids.append(row_id)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _free_text(value: Any) -> set[Finding]:
    return identifiers_in(_text(value))


def _session_pseudonym(value: Any) -> set[Finding]:
    return set() if is_pseudonym(str(value)) else {Finding.NOT_A_PSEUDONYM}


def _dead_letter_payload(value: Any) -> set[Finding]:
    found = _free_text(value)
    try:
        obj = json.loads(value)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return found
    if isinstance(obj, dict) and obj.get("user", REDACTED_USER) != REDACTED_USER:
        found.add(Finding.LOGIN_REFERENCE)
    return found


Check = Callable[[Any], set[Finding]]
# Every column a student identifier could reach: the one that holds login pseudonyms, what devices send that
# is kept (dead letters, command results, app names, error codes), and what staff type (audit summaries and
# change records, alert details, device purchase fields, user and token names).
COLUMNS: tuple[tuple[Any, Any, Check], ...] = (
    (DeviceState.device_id, DeviceState.session_pseudonym, _session_pseudonym),
    (DeviceState.device_id, DeviceState.app, _free_text),
    (DeviceState.device_id, DeviceState.last_error_code, _free_text),
    (DeadLetter.id, DeadLetter.payload, _dead_letter_payload),
    (DeadLetter.id, DeadLetter.detail, _free_text),
    (DeviceCommand.id, DeviceCommand.args, _free_text),
    (DeviceCommand.id, DeviceCommand.result_detail, _free_text),
    (Alert.id, Alert.detail, _free_text),
    (AuditEntry.id, AuditEntry.summary, _free_text),
    (AuditEntry.id, AuditEntry.before, _free_text),
    (AuditEntry.id, AuditEntry.after, _free_text),
    (Device.id, Device.order_number, _free_text),
    (Device.id, Device.funding_source, _free_text),
    (User.id, User.username, _free_text),
    (ApiToken.id, ApiToken.name, _free_text),
)


async def scan_columns(session: AsyncSession) -> list[ColumnScan]:
    """Read every candidate column in key order, BATCH rows at a time, and flag what should not be there."""
    out = []
    conn = await session.connection()
    for key, col, check in COLUMNS:
        scan = ColumnScan(col.class_.__tablename__, col.key)
        after: Any = None
        while True:
            stmt = select(key, col).where(col.is_not(None)).order_by(key).limit(BATCH)
            if after is not None:
                stmt = stmt.where(key > after)
            rows = (await conn.execute(stmt)).all()
            for row_id, value in rows:
                scan.rows += 1
                kinds = check(value)
                if kinds:
                    scan.flag(row_id, kinds)
            if len(rows) < BATCH:
                break
            after = rows[-1][0]
        out.append(scan)
    return out
