"""inbound mail: one row per letter taken from the mailbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 12:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbound_mail",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mail_key", sa.String(length=64), nullable=False),
        sa.Column("folder", sa.String(length=255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("sender_index", sa.String(length=64), nullable=True),
        sa.Column("raw_enc", sa.LargeBinary(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["request.id"], name=op.f("fk_inbound_mail_request_id_request")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_mail")),
        sa.UniqueConstraint("mail_key", name=op.f("uq_inbound_mail_mail_key")),
    )
    with op.batch_alter_table("inbound_mail", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbound_mail_outcome"), ["outcome"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_inbound_mail_request_id"), ["request_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_inbound_mail_sender_index"), ["sender_index"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("inbound_mail", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_mail_sender_index"))
        batch_op.drop_index(batch_op.f("ix_inbound_mail_request_id"))
        batch_op.drop_index(batch_op.f("ix_inbound_mail_outcome"))
    op.drop_table("inbound_mail")
