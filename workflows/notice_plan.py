"""A request's next notice instant, kept on its row, so a pass reads only what is due.

The scheduler writes ``Request.next_notice_at`` once it has looked at a request:
the next instant it owes anyone a notice about it (or, when nothing is owed
within its horizon, the instant to look again). A reconcile then reads only
the open requests whose instant has come or that have none (NULL: new, changed
or never planned), so its cost follows what is due, not the length of the queue.

Whatever changes a request through the ORM (its status, clock, assignee,
verification, anything :mod:`workflows.deadlines` reads, or anything else)
sets the instant back to NULL in the same flush: one ``before_flush``
listener, whoever writes (the service, the fulfilment, a channel), so no
method can forget it. The scheduler's own write goes through
:func:`set_next_notices`, guarded by the row's version: a request changed
after the pass read it keeps its NULL and is planned again by the next pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, event, inspect, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, UOWTransaction
from sqlalchemy.orm.attributes import flag_modified

from workflows.tables import Request

# Columns whose change alone does not change what a request is owed.
_NOT_A_CHANGE = frozenset({"next_notice_at", "version"})

_SET_NEXT = (
    update(Request.__table__)  # type: ignore[arg-type]
    .where(Request.id == bindparam("request_id"), Request.version == bindparam("read_version"))
    .values(next_notice_at=bindparam("at"))
)


@event.listens_for(Session, "before_flush")
def _replan_changed_requests(
    session: Session, flush_context: UOWTransaction, instances: Any
) -> None:
    for obj in session.dirty:
        if isinstance(obj, Request) and _changed(obj):
            obj.next_notice_at = None
            # Written even when this session read NULL: the scheduler may have planned
            # the row since, from what it was before this change.
            flag_modified(obj, "next_notice_at")


def _changed(request: Request) -> bool:
    state = inspect(request)
    return any(attr.history.has_changes() for attr in state.attrs if attr.key not in _NOT_A_CHANGE)


async def set_next_notices(
    session: AsyncSession, planned: Sequence[tuple[int, int, datetime]]
) -> None:
    """Record ``(request id, version read, next notice instant)`` for each planned request.

    A row whose version moved since it was read (it changed meanwhile) is left
    alone, so it stays NULL for the next pass to plan from what it is now. The
    version is not bumped: the scheduler's bookkeeping must not make a staff
    member's concurrent change fail as a conflict.
    """
    if planned:
        await session.execute(
            _SET_NEXT,
            [
                {"request_id": rid, "read_version": version, "at": at}
                for rid, version, at in planned
            ],
        )
