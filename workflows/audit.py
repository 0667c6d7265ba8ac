"""The audit log as a hash chain: each event carries the hash of the one before it.

Every :class:`~workflows.tables.AuditEvent` added through any session gets its
``prev_hash`` and ``hash`` when it is flushed, whoever wrote it (the service,
the outbox, the scheduler, the mail intake). Appending is serialised so the
chain never forks: on PostgreSQL by a transaction-level advisory lock, on
SQLite by its single writer (``BEGIN IMMEDIATE``). ``verify_chain`` walks the
log and names the first event whose content or link does not match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, UOWTransaction

from workflows.tables import AuditEvent

GENESIS = "0" * 64
# An arbitrary constant: the advisory lock that serialises appends to the chain.
_CHAIN_LOCK = 0x41494E41  # "AINA"


def _instant(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """The hash of one event: its content, canonically, after the previous hash."""
    body = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def event_fields(row: AuditEvent) -> dict[str, Any]:
    """What the hash covers: everything an auditor reads in the event."""
    return {
        "request_id": row.request_id,
        "reference": row.reference,
        "at": _instant(row.at),
        "actor": row.actor,
        "actor_id": row.actor_id,
        "actor_name": row.actor_name,
        "channel": row.channel,
        "action": row.action,
        "from_status": row.from_status,
        "to_status": row.to_status,
        "details": row.details or {},
    }


@event.listens_for(Session, "before_flush")
def _chain_new_events(session: Session, flush_context: UOWTransaction, instances: Any) -> None:
    new = [obj for obj in session.new if isinstance(obj, AuditEvent) and obj.hash is None]
    if not new:
        return
    # The end of the chain as this transaction left it, if it appended already: it holds
    # the append lock (advisory lock or SQLite's write lock) since, so nobody else moved it.
    prev = session.info.get(_CHAIN_END)
    if prev is None:
        with session.no_autoflush:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK})
            last = session.execute(
                select(AuditEvent.hash)
                .where(AuditEvent.hash.is_not(None))
                .order_by(AuditEvent.id.desc())
                .limit(1)
            ).scalar()
        prev = last or GENESIS
    for row in new:
        row.prev_hash = prev
        row.hash = event_hash(prev, event_fields(row))
        prev = row.hash
    session.info[_CHAIN_END] = prev


# Where this session's transaction left the chain (see _chain_new_events).
_CHAIN_END = "aina_dsr_audit_chain_end"


@event.listens_for(Session, "after_transaction_end")
def _forget_chain_end(session: Session, transaction: Any) -> None:
    # Any end, a savepoint's too: what a rolled-back savepoint appended is gone.
    session.info.pop(_CHAIN_END, None)


@dataclass(frozen=True)
class ChainReport:
    """The outcome of a walk through the log."""

    events: int
    broken_at: int | None = None
    reference: str | None = None
    reason: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_at is None


async def _rows(
    sessions: async_sessionmaker[AsyncSession], batch: int
) -> AsyncIterator[AuditEvent]:
    last_id = 0
    async with sessions() as session:
        for _ in range(10**9):
            rows = (
                await session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.id > last_id)
                    .order_by(AuditEvent.id)
                    .limit(batch)
                )
            ).all()
            if not rows:
                return
            for row in rows:
                yield row
            last_id = rows[-1].id
            session.expunge_all()


async def verify_chain(
    sessions: async_sessionmaker[AsyncSession], *, batch: int = 1000
) -> ChainReport:
    """Walk the audit log in order; the first event that does not fit breaks the chain."""
    prev = GENESIS
    count = 0
    async for row in _rows(sessions, batch):
        count += 1
        if row.prev_hash != prev:
            return ChainReport(count, row.id, row.reference, "it does not follow the event before")
        if row.hash != event_hash(prev, event_fields(row)):
            return ChainReport(count, row.id, row.reference, "its content was changed")
        prev = row.hash
    return ChainReport(count)
