"""requests: the likely kinds of an unclassified request, and staff's changes of kind

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08 10:00:00

``candidates`` holds the kinds an unclassified request most likely is (NULL for
every request opened with its kind, so all existing rows). ``kind_changed_at``
and ``kind_changes`` record staff's last change of kind and how many there were
(none for existing rows): the scheduler keys and owes a changed request's
notices from them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.add_column(sa.Column("candidates", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("kind_changed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("kind_changes", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    # In place, as 0006 does: copying the table would fail on the rows that point at it.
    with op.batch_alter_table("request", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("kind_changes")
        batch_op.drop_column("kind_changed_at")
        batch_op.drop_column("candidates")
