"""A notice is claimed once, under its idempotency key: whoever records the key first sends it.

A notice's key is its request and milestone (``DSR-…/staff/before/1``), or the
day for the staff digest (``digest/2026-11-24``). It is recorded in the same
transaction as the notice's audit event and outbox message, so a second
scheduler, a retried job or a restart sends nothing twice: on PostgreSQL a
second scheduler inserting the same key waits for the first one's transaction
and then inserts nothing.

When staff change a request's kind, its deadline is a new one: the notices of
the new clock are keyed by the change (``DSR-…/k1/staff/before/1``), so one
sent for the old deadline does not stand in for the new one's, and owed only
from the instant of the change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from workflows.deadlines.milestones import Milestone
from workflows.persistence.tables import Request, ScheduledNotice
from workflows.persistence.upsert import upsert

SENT = "sent"
SKIPPED = "skipped"
DIGEST = "digest"
# Notices are claimed this many to an INSERT (SQLite binds 7 values for each).
_CLAIM_CHUNK = 500


@dataclass(frozen=True)
class Owed:
    """A notice a request is owed now: sent (late or not), or skipped for ``skip_reason``."""

    milestone: Milestone
    late: bool
    skip_reason: str | None = None


@dataclass(frozen=True)
class KindChange:
    """Staff's last change of a request's kind: which one (1, 2, ...) and when."""

    number: int
    at: datetime

    @classmethod
    def from_columns(cls, number: int | None, at: datetime | None) -> KindChange | None:
        return cls(number, at) if number and at is not None else None

    @classmethod
    def of(cls, request: Request) -> KindChange | None:
        return cls.from_columns(request.kind_changes, request.kind_changed_at)


def notice_key(reference: str, milestone: Milestone, changed: KindChange | None = None) -> str:
    """A notice's idempotency key; one of a clock set by a change of kind is keyed by it."""
    if changed is None:
        return f"{reference}/{milestone.name}"
    return f"{reference}/k{changed.number}/{milestone.name}"


def owed_since(at: datetime, changed: KindChange | None) -> bool:
    """Whether a notice meant for instant ``at`` is owed: after the last change of kind,
    if any (before it, another clock ran, with notices of its own)."""
    return changed is None or at > changed.at


async def claim_many(
    session: AsyncSession, work: Sequence[tuple[Request, Owed]], now: datetime
) -> set[str]:
    """Record these notices under their keys; return the keys recorded now (not before).

    On PostgreSQL a second scheduler inserting the same keys waits for the
    first one's transaction and then inserts none of them.
    """
    rows = [
        {
            "key": notice_key(request.reference, item.milestone, KindChange.of(request)),
            "request_id": request.id,
            "milestone": item.milestone.name,
            "meant_for": item.milestone.day,
            "outcome": SKIPPED if item.skip_reason is not None else SENT,
            "late": item.late,
            "recorded_at": now,
        }
        for request, item in work
    ]
    claimed: set[str] = set()
    for start in range(0, len(rows), _CLAIM_CHUNK):
        statement = (
            upsert(session, ScheduledNotice)
            .values(rows[start : start + _CLAIM_CHUNK])
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(ScheduledNotice.key)
        )
        claimed.update(await session.scalars(statement))
    return claimed


async def claim(
    session: AsyncSession,
    key: str,
    request_id: int | None,
    milestone: Milestone | None,
    outcome: str,
    late: bool,
    now: datetime,
    *,
    day: date | None = None,
) -> bool:
    """Record a notice under its key; ``False`` when the key is recorded already.

    On PostgreSQL a second scheduler inserting the same key waits for the
    first one's transaction and then inserts nothing.
    """
    statement = (
        upsert(session, ScheduledNotice)
        .values(
            key=key,
            request_id=request_id,
            milestone=milestone.name if milestone is not None else DIGEST,
            meant_for=milestone.day if milestone is not None else day,
            outcome=outcome,
            late=late,
            recorded_at=now,
        )
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(ScheduledNotice.id)
    )
    return (await session.scalar(statement)) is not None
