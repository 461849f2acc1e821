"""room stocktake: counts of a room and a line per device expected or met

Revision ID: 0090
Revises: 0085
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0090"
down_revision = "0085"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stocktakes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("school_id", sa.Integer(), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("started_by", sa.String(length=120), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_by", sa.String(length=120), nullable=True),
        sa.Column("found", sa.Integer(), nullable=False),
        sa.Column("missing", sa.Integer(), nullable=False),
        sa.Column("unexpected", sa.Integer(), nullable=False),
        sa.Column("moved", sa.Integer(), nullable=False),
        sa.Column("lost", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], name=op.f("fk_stocktakes_room_id_rooms")),
        sa.ForeignKeyConstraint(["school_id"], ["schools.id"], name=op.f("fk_stocktakes_school_id_schools")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stocktakes")),
    )
    with op.batch_alter_table("stocktakes", schema=None) as batch_op:
        batch_op.create_index("ix_stocktakes_room_finished", ["room_id", "finished_at"], unique=False)
        batch_op.create_index("ix_stocktakes_school_started", ["school_id", "started_at"], unique=False)
    op.create_table(
        "stocktake_lines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stocktake_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("seen_by_network", sa.Boolean(), nullable=False),
        sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.String(length=16), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_stocktake_lines_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["stocktake_id"], ["stocktakes.id"], name=op.f("fk_stocktake_lines_stocktake_id_stocktakes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stocktake_lines")),
        sa.UniqueConstraint("stocktake_id", "device_id", name=op.f("uq_stocktake_lines_stocktake_id")),
    )
    with op.batch_alter_table("stocktake_lines", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stocktake_lines_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_stocktake_lines_stocktake_id"), ["stocktake_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("stocktake_lines", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stocktake_lines_stocktake_id"))
        batch_op.drop_index(batch_op.f("ix_stocktake_lines_device_id"))
    op.drop_table("stocktake_lines")
    with op.batch_alter_table("stocktakes", schema=None) as batch_op:
        batch_op.drop_index("ix_stocktakes_school_started")
        batch_op.drop_index("ix_stocktakes_room_finished")
    op.drop_table("stocktakes")
