"""audit chain keyed: each event's hash signed with a key the database does not hold

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 10:00:00

``audit_event.mac`` is the HMAC-SHA256 of the event's hash under a subkey of
``DSR_ENCRYPTION_KEY``, ``audit_event.key_id`` names that subkey (so events
signed before and after a key rotation both verify). A migration has no key,
so the events already there stay unsigned here; the first command run after
the upgrade signs them once (``workflows.privacy.audit.sign_unkeyed_chain``), as far
as their links hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mac", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_column("key_id")
        batch_op.drop_column("mac")
