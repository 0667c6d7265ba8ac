"""conversation state and staff cards

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 12:55:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation_state",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=255), nullable=True),
        sa.Column("data_enc", sa.LargeBinary(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_conversation_state")),
    )
    op.create_table(
        "staff_card",
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["request.id"], name=op.f("fk_staff_card_request_id_request")
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_staff_card")),
    )


def downgrade() -> None:
    op.drop_table("staff_card")
    op.drop_table("conversation_state")
