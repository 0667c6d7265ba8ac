"""An attacker with write access to the database: the audit chain's keyless link formula, used."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.persistence.tables import AuditEvent
from workflows.privacy.audit import GENESIS


def plain_hash(prev: str, row: AuditEvent) -> str:
    """The attacker's tool: the chain's link formula, public in the code, with no key."""
    fields = {
        "request_id": row.request_id,
        "reference": row.reference,
        "at": row.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if row.at.tzinfo
        else row.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": row.actor,
        "actor_id": row.actor_id,
        "actor_name": row.actor_name,
        "channel": row.channel,
        "action": row.action,
        "from_status": row.from_status,
        "to_status": row.to_status,
        "details": row.details or {},
    }
    body = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{prev}\n{body}".encode()).hexdigest()


async def rewrite_and_rehash(
    sessions: async_sessionmaker[AsyncSession], victim_id: int, **changes: object
) -> None:
    """Change one event by hand, then link it and every later event again with SHA-256."""
    async with sessions.begin() as session:
        rows = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
        start = next(n for n, row in enumerate(rows) if row.id == victim_id)
        prev = rows[start - 1].hash if start else GENESIS
        for row in rows[start:]:
            if row.id == victim_id:
                for name, value in changes.items():
                    setattr(row, name, value)
            row.prev_hash = prev
            row.hash = plain_hash(prev, row)
            prev = row.hash
