"""credential rotation over MQTT: a pending password (hash only) with its grace period and command

Revision ID: 0085
Revises: 0070
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0085"
down_revision = "0070"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("device_credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_hash", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("pending_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("rotation_grace_s", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rotation_command_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_credentials", schema=None) as batch_op:
        batch_op.drop_column("rotation_command_id")
        batch_op.drop_column("rotation_grace_s")
        batch_op.drop_column("pending_until")
        batch_op.drop_column("pending_hash")
