"""mail caps: letters answered at unverified addresses, counted by the hour

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00

``inbound_mail.answered_unverified`` marks a letter the desk answered at an
address nobody had verified; the intake's caps count these per mailbox and in
total over the last hour, hence the index on ``received_at``. The index on
``verification.target_index`` answers "was this address ever verified?".
Existing rows count as not answered that way: the caps start from zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbound_mail", schema=None, recreate="never") as batch_op:
        batch_op.add_column(
            sa.Column(
                "answered_unverified", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch_op.create_index(
            batch_op.f("ix_inbound_mail_received_at"), ["received_at"], unique=False
        )
    with op.batch_alter_table("verification", schema=None, recreate="never") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_verification_target_index"), ["target_index"], unique=False
        )


def downgrade() -> None:
    # SQLite (3.35 on) drops a column in place; copying the table would fail on rows
    # that point at requests (see 0006).
    with op.batch_alter_table("verification", schema=None, recreate="never") as batch_op:
        batch_op.drop_index(batch_op.f("ix_verification_target_index"))
    with op.batch_alter_table("inbound_mail", schema=None, recreate="never") as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_mail_received_at"))
        batch_op.drop_column("answered_unverified")
