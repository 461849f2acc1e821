"""reference-data generation: a counter that triggers move when devices, rooms, models, schools or timetables
change

The service and every `labfleet ingest` worker hold the device directory and the timetables in memory. They
poll this one row every few seconds and reload when it moved, so a device moved to another room counts
against the new room everywhere, whoever made the change (API, import, CLI or plain SQL). Triggers fire only
on the columns the in-memory copies hold, so the ingest hot path (device_state, usage) never touches the row.

Revision ID: 0045
Revises: 0040
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0045"
down_revision = "0040"
branch_labels = None
depends_on = None

# (table, columns whose UPDATE moves the generation; None: every INSERT, UPDATE and DELETE does).
WATCHED: list[tuple[str, tuple[str, ...] | None]] = [
    ("devices", ("room_id", "school_id", "model_id")),
    ("rooms", ("kind", "school_id")),
    ("device_models", ("model_number", "kind", "profile_key")),
    ("schools", ("code", "timezone")),
    ("device_credentials", ("username", "school_code", "revoked_at", "device_id")),
    ("bell_periods", None),
    ("calendar_entries", None),
]
# An upsert, so the counter starts again if its row was ever deleted (a truncating test harness, a restore).
BUMP = (
    "INSERT INTO reference_generation (id, generation) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET generation = reference_generation.generation + 1"
)


def _names(table: str) -> list[str]:
    return [f"refgen_{table}_{ev}" for ev in ("ins", "upd", "del")]


def upgrade() -> None:
    op.create_table(
        "reference_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_generation")),
    )
    op.execute("INSERT INTO reference_generation (id, generation) VALUES (1, 0)")
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_triggers()
    else:
        _postgres_triggers()


def _sqlite_triggers() -> None:
    for table, cols in WATCHED:
        ins, upd, dele = _names(table)
        if cols is None:
            op.execute(f"CREATE TRIGGER {ins} AFTER INSERT ON {table} BEGIN {BUMP}; END")
            op.execute(f"CREATE TRIGGER {upd} AFTER UPDATE ON {table} BEGIN {BUMP}; END")
        else:
            changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in cols)
            op.execute(
                f"CREATE TRIGGER {upd} AFTER UPDATE OF {', '.join(cols)} ON {table} "
                f"WHEN {changed} BEGIN {BUMP}; END"
            )
        op.execute(f"CREATE TRIGGER {dele} AFTER DELETE ON {table} BEGIN {BUMP}; END")


def _postgres_triggers() -> None:
    op.execute(
        "CREATE FUNCTION bump_reference_generation() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN {BUMP}; RETURN NULL; END $$"
    )
    run = "EXECUTE FUNCTION bump_reference_generation()"
    for table, cols in WATCHED:
        ins, upd, dele = _names(table)
        if cols is None:
            # Statement-level: a bulk import of periods moves the counter once, not once per row.
            op.execute(f"CREATE TRIGGER {ins} AFTER INSERT ON {table} FOR EACH STATEMENT {run}")
            op.execute(f"CREATE TRIGGER {upd} AFTER UPDATE ON {table} FOR EACH STATEMENT {run}")
        else:
            changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in cols)
            op.execute(
                f"CREATE TRIGGER {upd} AFTER UPDATE OF {', '.join(cols)} ON {table} "
                f"FOR EACH ROW WHEN ({changed}) {run}"
            )
        op.execute(f"CREATE TRIGGER {dele} AFTER DELETE ON {table} FOR EACH STATEMENT {run}")


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, _ in WATCHED:
        for name in _names(table):
            op.execute(f"DROP TRIGGER IF EXISTS {name}" + ("" if sqlite else f" ON {table}"))
    if not sqlite:
        op.execute("DROP FUNCTION IF EXISTS bump_reference_generation()")
    op.drop_table("reference_generation")
