"""scheduler: each request's next notice instant on its row, and what it was planned from

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 10:00:00

Existing rows are left NULL ("not planned yet"): the first reconcile after the
upgrade plans every open request once, and sends whatever is owed by then.
``scheduler_state`` starts empty: that first reconcile stores the fingerprint of
the settings, calendar and kinds it planned from.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scheduler_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_state")),
    )
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_notice_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_request_next_notice_at"), ["next_notice_at"], unique=False
        )


def downgrade() -> None:
    # SQLite (3.35 on) drops a column in place: copying the table, batch mode's way, would
    # fail on the rows that point at the requests once there are any.
    with op.batch_alter_table("request", schema=None, recreate="never") as batch_op:
        batch_op.drop_index(batch_op.f("ix_request_next_notice_at"))
        batch_op.drop_column("next_notice_at")
    op.drop_table("scheduler_state")
