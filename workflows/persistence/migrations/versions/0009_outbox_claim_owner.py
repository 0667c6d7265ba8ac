"""outbox: the owner token of each claim

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 10:00:00

A row being sent names the dispatcher that claimed it, so only that
dispatcher records what became of it, and a dead dispatcher's claims can be
taken back at once. Rows claimed before the upgrade have none: their lease
frees them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # In place (SQLite 3.35 on): copying the table would trip over the rows pointing at it.
    with op.batch_alter_table("outbox", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("claimed_by")
