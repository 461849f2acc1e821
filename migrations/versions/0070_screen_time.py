"""screen time: usage_screen, one row per terminal and local day, from screen_session events

Revision ID: 0070
Revises: 0080 (main's head when this landed; 0080 landed first)
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0070"
down_revision = "0080"
branch_labels = None
depends_on = None

# Spelled out rather than imported: a migration must not change when the models do.
TERMINAL_COLUMNS = (
    "device_id",
    "school_id",
    "room_id",
    "day",
    "use_seconds",
    "sessions",
    "long_sessions",
    "breaks",
    "limit_locks",
    "unmanaged_sessions",
    "longest_seconds",
    "session_limit_min",
    "daily_limit_min",
)
DAY_COLUMNS = (
    "day",
    "school_id",
    "use_seconds",
    "sessions",
    "long_sessions",
    "breaks",
    "limit_locks",
    "unmanaged_sessions",
    "daily_limit_min",
)


def upgrade() -> None:
    op.create_table(
        "usage_screen",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("school_id", sa.Integer(), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("use_seconds", sa.Integer(), nullable=False),
        sa.Column("sessions", sa.Integer(), nullable=False),
        sa.Column("long_sessions", sa.Integer(), nullable=False),
        sa.Column("breaks", sa.Integer(), nullable=False),
        sa.Column("limit_locks", sa.Integer(), nullable=False),
        sa.Column("unmanaged_sessions", sa.Integer(), nullable=False),
        sa.Column("longest_seconds", sa.Integer(), nullable=False),
        sa.Column("session_limit_min", sa.Integer(), nullable=True),
        sa.Column("daily_limit_min", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_usage_screen_device_id_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_screen")),
        sa.UniqueConstraint("device_id", "day", name=op.f("uq_usage_screen_device_id")),
    )
    # Covering indexes for the screen-time report (see fleet.persistence.models_mqtt.UsageScreen).
    op.create_index("ix_usage_screen_report", "usage_screen", list(TERMINAL_COLUMNS), unique=False)
    op.create_index("ix_usage_screen_day", "usage_screen", list(DAY_COLUMNS), unique=False)


def downgrade() -> None:
    op.drop_index("ix_usage_screen_day", table_name="usage_screen")
    op.drop_index("ix_usage_screen_report", table_name="usage_screen")
    op.drop_table("usage_screen")
