"""requests: the work the approvals agreed to

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10 10:00:00

``approved_work_enc`` keeps, encrypted, what the approvals of a request agreed
to do (the fields to destroy, the corrected values), so that completing an
approved request does exactly that. NULL for existing rows: a request approved
before the upgrade is completed with the fields its ``approve`` audit event
names.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approved_work_enc", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    # In place, as 0007 does: copying the table would fail on the rows that point at it.
    with op.batch_alter_table("request", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("approved_work_enc")
