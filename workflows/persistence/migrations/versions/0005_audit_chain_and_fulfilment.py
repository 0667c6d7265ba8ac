"""audit hash chain; the directory's flags for fulfilled requests

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 13:10:00
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64


def _hash(prev: str, row: Any) -> str:
    # A frozen copy of privacy.audit.event_hash: a migration must not change with the code.
    at = row.at if isinstance(row.at, datetime) else datetime.fromisoformat(str(row.at))
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    details = row.details
    if isinstance(details, str):
        details = json.loads(details)
    fields = {
        "request_id": row.request_id,
        "reference": row.reference,
        "at": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": row.actor,
        "actor_id": row.actor_id,
        "actor_name": row.actor_name,
        "channel": row.channel,
        "action": row.action,
        "from_status": row.from_status,
        "to_status": row.to_status,
        "details": details or {},
    }
    body = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{prev}\n{body}".encode()).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_audit_event_hash"), ["hash"])
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("marketing_stopped_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("processing_stopped_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("processing_scope_enc", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("erased_fields", sa.JSON(), nullable=True))

    # Chain the events already there, oldest first.
    bind = op.get_bind()
    events = sa.table(
        "audit_event",
        sa.column("id", sa.Integer()),
        sa.column("prev_hash", sa.String()),
        sa.column("hash", sa.String()),
    )
    prev = GENESIS
    rows = bind.execute(
        sa.text(
            "SELECT id, request_id, reference, at, actor, actor_id, actor_name, channel,"
            " action, from_status, to_status, details FROM audit_event ORDER BY id"
        )
    ).fetchall()
    for row in rows:
        digest = _hash(prev, row)
        bind.execute(
            events.update().where(events.c.id == row.id).values(prev_hash=prev, hash=digest)
        )
        prev = digest


def downgrade() -> None:
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.drop_column("erased_fields")
        batch_op.drop_column("erased_at")
        batch_op.drop_column("blocked_at")
        batch_op.drop_column("processing_scope_enc")
        batch_op.drop_column("processing_stopped_at")
        batch_op.drop_column("marketing_stopped_at")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_audit_event_hash"), type_="unique")
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
