"""scheduler: one row per reminder, deadline notice or digest dealt with

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scheduled_notice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("milestone", sa.String(length=64), nullable=False),
        sa.Column("meant_for", sa.Date(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["request.id"], name=op.f("fk_scheduled_notice_request_id_request")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scheduled_notice")),
        sa.UniqueConstraint("key", name=op.f("uq_scheduled_notice_key")),
    )
    with op.batch_alter_table("scheduled_notice", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_scheduled_notice_request_id"), ["request_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("scheduled_notice", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scheduled_notice_request_id"))
    op.drop_table("scheduled_notice")
