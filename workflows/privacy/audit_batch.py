"""Many audit events appended to the chain in one INSERT, chained and signed as one by one.

Flushed through the ORM, each new event is an INSERT of its own on SQLite (the
ORM needs each row's id, and SQLite does not promise the order of a
multi-row INSERT's RETURNING). A batch of filings (fifty letters) would pay
fifty statements for its ``opened`` events. :func:`record_events` links and
signs the events in their order first (:func:`workflows.privacy.audit.link_events`,
under the same append lock), then stores them in one statement, and checks
that the database numbered them in that order: the chain is walked by id, so
a batch numbered otherwise fails its transaction rather than leave a chain
that does not verify.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from workflows.persistence.tables import AuditEvent
from workflows.privacy.audit import link_events

# What a new event's row holds (its id comes from the database).
_COLUMNS = tuple(column.key for column in AuditEvent.__table__.columns if column.key != "id")


class ChainOutOfOrder(RuntimeError):
    """The database numbered a batch of events otherwise than the order they were chained in."""


async def record_events(
    session: AsyncSession, events: Sequence[Mapping[str, Any]]
) -> list[AuditEvent]:
    """Append events, each given as :func:`~workflows.privacy.audit.record_event`'s
    arguments, in one INSERT; the stored rows in the same order.

    Events added to the session one by one and not yet flushed come first in
    the chain (they are flushed here).
    """
    if not events:
        return []
    new = [
        AuditEvent(**{**values, "details": dict(values.get("details") or {})}) for values in events
    ]
    await session.flush()
    await session.run_sync(link_events, new)
    rows = [{key: getattr(event, key) for key in _COLUMNS} for event in new]
    made = await session.scalars(
        insert(AuditEvent).returning(AuditEvent).execution_options(render_nulls=True), rows
    )
    by_hash = {row.hash: row for row in made}
    stored = [by_hash[row["hash"]] for row in rows]
    if any(before.id >= after.id for before, after in pairwise(stored)):
        raise ChainOutOfOrder("a batch of audit events was not numbered in its order")
    return stored
