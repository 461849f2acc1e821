"""reports: covering index for utilisation over usage_active

Revision ID: 0030
Revises: 0020
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0030"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_usage_active_report",
        "usage_active",
        ["device_id", "bucket_start", "school_id", "active_minutes"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_usage_active_report", table_name="usage_active")
