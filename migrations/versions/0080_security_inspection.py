"""security inspection: token last use, refused CONNECTs of revoked devices, pseudonym key epochs

Revision ID: 0080
Revises: 0060
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0080"
down_revision = "0060"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("device_credentials", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("refused_connects", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(sa.Column("last_refused_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "pseudonym_key_epochs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pseudonym_key_epochs")),
    )


def downgrade() -> None:
    op.drop_table("pseudonym_key_epochs")
    with op.batch_alter_table("device_credentials", schema=None) as batch_op:
        batch_op.drop_column("last_refused_at")
        batch_op.drop_column("refused_connects")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
