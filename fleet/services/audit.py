"""The append-only, hash-chained audit log. There is no update or delete path, in code or API, and no pruning.

Each record carries its position (`seq`), the hash of the record before and its own hash
(fleet.domain.auditchain).
Appends are serialized by a lock on the one `audit_chain` head row, taken when the records are flushed: a row
lock on PostgreSQL, the database's write lock on SQLite. Two writers therefore never fork the chain.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, inspect, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session as SyncSession

from fleet.domain.auditchain import GENESIS, ChainRecord, ChainReport, ChainVerifier, record_hash
from fleet.domain.permissions import Permission, Principal
from fleet.errors import InvalidInput, PermissionDenied
from fleet.persistence.models import AuditChainHead, AuditEntry
from fleet.services.common import Page, paginate, require

# Rows read per round trip when verifying or exporting: bounded memory for a log of millions of records.
BATCH = 2000
# An XLSX sheet holds 1,048,576 rows; an export larger than that is refused with advice to narrow it.
XLSX_MAX_ROWS = 1_000_000
EXPORT_COLUMNS = (
    "seq",
    "id",
    "at",
    "actor",
    "action",
    "object_type",
    "object_id",
    "school_id",
    "summary",
    "before",
    "after",
    "prev_hash",
    "hash",
)


def record(
    session: AsyncSession,
    *,
    principal: Principal,
    at: datetime,
    action: str,
    object_type: str,
    object_id: Any,
    school_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    summary: str | None = None,
) -> AuditEntry:
    """Add an audit entry to the caller's transaction (it commits or rolls back with the change).

    Its place in the chain is given when the session flushes (see `_chain_new_entries`)."""
    entry = AuditEntry(
        at=at,
        actor=principal.actor,
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        school_id=school_id,
        before=before,
        after=after,
        summary=summary,
    )
    session.add(entry)
    return entry


def _lock_head(session: SyncSession) -> tuple[int, str]:
    """Lock the chain head for the rest of the transaction and read it (seq, hash of the last record)."""
    conn = session.connection()
    # An UPDATE first: on PostgreSQL it takes the head row's lock (a second appender waits here); on SQLite it
    # takes the database write lock before anything is read, so the head read below is the latest.
    locked = conn.execute(text("UPDATE audit_chain SET seq = seq WHERE id = 1")).rowcount
    if not locked:
        # An emptied table (tests truncate every table): rebuild the head from the last record.
        last = conn.execute(text("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")).first()
        seq, last_hash = (int(last[0]), str(last[1])) if last else (0, GENESIS)
        conn.execute(
            text("INSERT INTO audit_chain (id, seq, last_hash) VALUES (1, :seq, :h)"),
            {"seq": seq, "h": last_hash},
        )
        return seq, last_hash
    row = conn.execute(text("SELECT seq, last_hash FROM audit_chain WHERE id = 1")).one()
    return int(row[0]), str(row[1])


@event.listens_for(SyncSession, "before_flush")
def _chain_new_entries(session: SyncSession, _flush_context: Any, _instances: Any) -> None:
    """Give new audit entries their seq, prev_hash and hash, in the order they were added."""
    new = [obj for obj in session.new if isinstance(obj, AuditEntry) and obj.hash is None]
    if not new:
        return
    new.sort(key=lambda obj: inspect(obj).insert_order or 0)  # the order they were add()ed
    seq, prev = _lock_head(session)
    for entry in new:
        seq += 1
        entry.seq = seq
        entry.prev_hash = prev
        entry.hash = prev = record_hash(
            seq=seq,
            prev_hash=entry.prev_hash,
            at=entry.at,
            actor=entry.actor,
            action=entry.action,
            object_type=entry.object_type,
            object_id=entry.object_id,
            school_id=entry.school_id,
            before=entry.before,
            after=entry.after,
            summary=entry.summary,
        )
    session.connection().execute(
        text("UPDATE audit_chain SET seq = :seq, last_hash = :h WHERE id = 1"), {"seq": seq, "h": prev}
    )


def _scoped(principal: Principal) -> Any:
    stmt = select(AuditEntry)
    if not principal.district_wide:
        # School-scoped auditors see their schools' entries; district-level entries have no school.
        stmt = stmt.where(or_(AuditEntry.school_id.in_(sorted(principal.school_ids) or [-1])))
    return stmt


async def list_entries(
    session: AsyncSession,
    principal: Principal,
    *,
    cursor: str | None,
    limit: int,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    actor: str | None = None,
    school_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    newest_first: bool = False,
) -> Page[AuditEntry]:
    require(principal, Permission.READ_AUDIT)
    stmt = _filtered(
        _scoped(principal),
        action=action,
        object_type=object_type,
        object_id=object_id,
        actor=actor,
        school_id=school_id,
        since=since,
        until=until,
    )
    return await paginate(session, stmt, AuditEntry, cursor, limit, descending=newest_first)


def _filtered(
    stmt: Any,
    *,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    actor: str | None = None,
    school_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Any:
    for col, val in (
        (AuditEntry.action, action),
        (AuditEntry.object_type, object_type),
        (AuditEntry.object_id, object_id),
        (AuditEntry.actor, actor),
        (AuditEntry.school_id, school_id),
    ):
        if val is not None:
            stmt = stmt.where(col == val)
    if since is not None:
        stmt = stmt.where(AuditEntry.at >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.at < until)
    return stmt


def _chain_record(e: AuditEntry) -> ChainRecord:
    return ChainRecord(
        id=e.id,
        seq=e.seq,
        at=e.at,
        actor=e.actor,
        action=e.action,
        object_type=e.object_type,
        object_id=e.object_id,
        school_id=e.school_id,
        before=e.before,
        after=e.after,
        summary=e.summary,
        prev_hash=e.prev_hash or "",
        hash=e.hash or "",
    )


async def _batches(session: AsyncSession, stmt: Any) -> AsyncIterator[list[AuditEntry]]:
    """Keyset batches in chain order; the session is cleared between batches so memory stays bounded."""
    after = 0
    while True:
        rows = list(
            (await session.execute(stmt.where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(BATCH)))
            .scalars()
            .all()
        )
        if not rows:
            return
        yield rows
        after = rows[-1].seq
        session.expunge_all()


async def verify_chain(session: AsyncSession, principal: Principal) -> ChainReport:
    """Walk the whole chain; the first break (an edited, missing or reordered record) is placed."""
    require(principal, Permission.READ_AUDIT)
    if not principal.district_wide:
        raise PermissionDenied(
            "verifying the audit chain needs a district-wide token (it reads every record)"
        )
    verifier = ChainVerifier()
    async for rows in _batches(session, select(AuditEntry)):
        verifier.feed(_chain_record(e) for e in rows)
    head = (await session.execute(select(AuditChainHead.seq, AuditChainHead.last_hash))).first()
    return verifier.finish(head[0] if head else None, head[1] if head else None)


def _export_row(e: AuditEntry) -> list[Any]:
    return [
        e.seq,
        e.id,
        e.at.isoformat(),
        e.actor,
        e.action,
        e.object_type,
        e.object_id or "",
        "" if e.school_id is None else e.school_id,
        e.summary or "",
        "" if e.before is None else json.dumps(e.before, ensure_ascii=False, sort_keys=True),
        "" if e.after is None else json.dumps(e.after, ensure_ascii=False, sort_keys=True),
        e.prev_hash,
        e.hash,
    ]


EXPORT_FORMATS = ("csv", "xlsx")
EXPORT_MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


async def export_entries(
    session: AsyncSession,
    principal: Principal,
    fmt: str,
    *,
    school_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> bytes:
    """The audit log for inspectors, in chain order with hashes: CSV (UTF-8 with BOM, for Excel) or XLSX."""
    require(principal, Permission.READ_AUDIT)
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(EXPORT_FORMATS)}")
    stmt = _filtered(_scoped(principal), school_id=school_id, since=since, until=until)
    if fmt == "csv":
        out = io.StringIO()
        out.write("\ufeff")
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(EXPORT_COLUMNS)
        async for batch in _batches(session, stmt):
            writer.writerows(_export_row(e) for e in batch)
        return out.getvalue().encode("utf-8")
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("audit")
    ws.append(list(EXPORT_COLUMNS))
    count = 0
    async for batch in _batches(session, stmt):
        count += len(batch)
        if count > XLSX_MAX_ROWS:
            raise InvalidInput(f"more than {XLSX_MAX_ROWS} records; narrow since/until or export CSV")
        for e in batch:
            row: list[Any] = _export_row(e)
            row[2] = e.at.astimezone(UTC).replace(tzinfo=None)  # Excel has no zones; the column is UTC
            for i, value in enumerate(row):
                if isinstance(value, str) and value.startswith("="):
                    # A summary starting with '=' is text, never a formula the inspector's Excel would run.
                    cell = WriteOnlyCell(ws, value)
                    cell.data_type = "s"
                    row[i] = cell
            ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
