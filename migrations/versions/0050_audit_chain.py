"""audit hash chain: seq, prev_hash and hash on every audit record, and the one-row chain head

Each audit record carries its position and the hash of the record before (fleet.domain.auditchain), so
`labfleet audit verify` finds an edited, deleted or reordered record. The head row is what appends lock.
Existing records are chained here in id order.

Revision ID: 0050
Revises: 0045
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fleet.domain.auditchain import GENESIS, record_hash

revision = "0050"
down_revision = "0045"
branch_labels = None
depends_on = None

_BATCH = 2000


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
    op.create_table(
        "audit_chain",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain")),
    )
    conn = op.get_bind()
    log = sa.table(
        "audit_log",
        sa.column("id", sa.Integer),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("actor", sa.String),
        sa.column("action", sa.String),
        sa.column("object_type", sa.String),
        sa.column("object_id", sa.String),
        sa.column("school_id", sa.Integer),
        sa.column("before", sa.JSON),
        sa.column("after", sa.JSON),
        sa.column("summary", sa.Text),
        sa.column("seq", sa.Integer),
        sa.column("prev_hash", sa.String),
        sa.column("hash", sa.String),
    )
    seq, prev, after_id = 0, GENESIS, 0
    while True:
        rows = (
            conn.execute(sa.select(log).where(log.c.id > after_id).order_by(log.c.id).limit(_BATCH))
            .mappings()
            .all()
        )
        if not rows:
            break
        for r in rows:
            seq += 1
            h = record_hash(
                seq=seq,
                prev_hash=prev,
                at=r["at"],
                actor=r["actor"],
                action=r["action"],
                object_type=r["object_type"],
                object_id=r["object_id"],
                school_id=r["school_id"],
                before=r["before"],
                after=r["after"],
                summary=r["summary"],
            )
            conn.execute(sa.update(log).where(log.c.id == r["id"]).values(seq=seq, prev_hash=prev, hash=h))
            prev = h
        after_id = rows[-1]["id"]
    conn.execute(
        sa.text("INSERT INTO audit_chain (id, seq, last_hash) VALUES (1, :seq, :h)"), {"seq": seq, "h": prev}
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("seq", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("prev_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column("hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_index(batch_op.f("ix_audit_log_seq"), ["seq"], unique=True)


def downgrade() -> None:
    op.drop_table("audit_chain")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_seq"))
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("seq")
