"""Retention: history older than the configured number of days is deleted; the audit log never is.

Each rule names a table, the column that dates a row, and the setting that says how many days are kept.
`run` deletes in short batches, each its own transaction (ingest keeps writing in between), and records one
audit entry with the counts; `dry_run` only counts. The nightly job (fleet/runtime/retention_job.py) and
`labfleet retention run` call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleet.domain.permissions import Principal
from fleet.persistence.db import unit_of_work
from fleet.persistence.models_mqtt import (
    DeadLetter,
    DeviceCommand,
    PresenceTransition,
    UsageActive,
    UsageBytes,
    UsageConcurrency,
    UsageScreen,
)
from fleet.services import audit
from fleet.settings import RetentionSettings


@dataclass(frozen=True)
class Rule:
    table: str
    model: Any
    column: Any
    setting: str  # the RetentionSettings field holding the days kept
    by_day: bool = False  # the column is a date (a local school day), not a timestamp

    def cutoff(self, cfg: RetentionSettings, now: datetime) -> datetime | date:
        edge = now - timedelta(days=int(getattr(cfg, self.setting)))
        return edge.date() if self.by_day else edge

    def expired(self, cfg: RetentionSettings, now: datetime) -> ColumnElement[bool]:
        """Rows strictly older than the cutoff; a row exactly `days` old is kept."""
        clause: ColumnElement[bool] = self.column < self.cutoff(cfg, now)
        if self.model is DeviceCommand:  # queued and sent commands have no finished_at and stay
            clause = clause & DeviceCommand.finished_at.is_not(None)
        return clause


RULES: tuple[Rule, ...] = (
    Rule("usage_bytes", UsageBytes, UsageBytes.bucket_start, "usage_days"),
    Rule("usage_active", UsageActive, UsageActive.bucket_start, "usage_days"),
    Rule("usage_screen", UsageScreen, UsageScreen.day, "usage_days", by_day=True),
    Rule("usage_concurrency", UsageConcurrency, UsageConcurrency.day, "usage_days", by_day=True),
    Rule("presence_transitions", PresenceTransition, PresenceTransition.at, "presence_days"),
    Rule("dead_letters", DeadLetter, DeadLetter.received_at, "dead_letter_days"),
    Rule("device_commands", DeviceCommand, DeviceCommand.finished_at, "command_days"),
)


@dataclass(frozen=True)
class RetentionResult:
    dry_run: bool
    at: datetime
    rows: dict[str, int]  # per table: rows deleted (or that would be)
    cutoffs: dict[str, str]


async def count_expired(session: AsyncSession, rule: Rule, cfg: RetentionSettings, now: datetime) -> int:
    stmt = select(func.count()).select_from(rule.model).where(rule.expired(cfg, now))
    return int((await session.execute(stmt)).scalar_one())


async def delete_batch(
    session: AsyncSession, rule: Rule, cfg: RetentionSettings, now: datetime, limit: int
) -> int:
    """Delete up to `limit` expired rows of one table (flush only; the caller's unit of work commits)."""
    ids = select(rule.model.id).where(rule.expired(cfg, now)).limit(limit).scalar_subquery()
    result = await session.execute(
        delete(rule.model).where(rule.model.id.in_(ids)), execution_options={"synchronize_session": False}
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]  # a CursorResult for DELETE


async def run(
    sessions: async_sessionmaker[AsyncSession],
    principal: Principal,
    cfg: RetentionSettings,
    now: datetime,
    *,
    dry_run: bool = False,
) -> RetentionResult:
    """Apply every rule at `now`; one audit entry for a real run."""
    rows: dict[str, int] = {}
    for rule in RULES:
        if dry_run:
            async with sessions() as session:
                rows[rule.table] = await count_expired(session, rule, cfg, now)
            continue
        total = 0
        while True:
            async with unit_of_work(sessions) as session:
                n = await delete_batch(session, rule, cfg, now, cfg.batch_rows)
            total += n
            if n < cfg.batch_rows:
                break
        rows[rule.table] = total
    cutoffs = {rule.table: rule.cutoff(cfg, now).isoformat() for rule in RULES}
    if not dry_run:
        async with unit_of_work(sessions) as session:
            audit.record(
                session,
                principal=principal,
                at=now,
                action="retention.run",
                object_type="retention",
                object_id=None,
                after={"deleted": rows, "cutoffs": cutoffs},
                summary=f"retention: {sum(rows.values())} rows older than their cutoffs deleted",
            )
    return RetentionResult(dry_run, now, rows, cutoffs)
