"""A request's next notice instant, kept on its row, so a pass reads only what is due.

The scheduler writes ``Request.next_notice_at`` once it has looked at a request:
the next instant it owes anyone a notice about it (or, when nothing is owed
within its horizon, the instant to look again). A reconcile then reads only
the open requests whose instant has come or that have none (NULL: new, changed
or never planned), so its cost follows what is due, not the length of the queue.

Whatever changes a request through the ORM (its status, clock, assignee,
verification, anything :mod:`workflows.deadlines.milestones` reads, or anything else)
sets the instant back to NULL in the same flush: one ``before_flush``
listener, whoever writes (the service, the fulfilment, a channel), so no
method can forget it. The scheduler's own write goes through
:func:`set_next_notices`, guarded by the row's version: a request changed
after the pass read it keeps its NULL and is planned again by the next pass.

The instants are also computed from things outside the rows: the reminder
settings, the working calendar (holidays and the operator's transfers, the
time zone) and the kinds' clocks. Their fingerprint, :func:`plan_basis`, is
kept in ``scheduler_state``; when a scheduler starts with another one (a new
milestone, an earlier hour, a working Saturday), :func:`adopt_basis` sets every
open request back to NULL in the transaction that stores the new fingerprint,
so no notice made earlier waits for an instant planned under the old ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, event, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, UOWTransaction
from sqlalchemy.orm.attributes import flag_modified

from workflows.deadlines.calendar import WorkingCalendar
from workflows.deadlines.milestones import ReminderPolicy
from workflows.kinds import KindSpec, RequestKind
from workflows.persistence.tables import Request, SchedulerState
from workflows.persistence.upsert import upsert

# The ``scheduler_state`` row holding the fingerprint the stored instants were planned from.
PLAN_BASIS = "notice_plan_basis"
# Bump when the planning code comes to compute other instants from the same inputs.
_PLANNER_VERSION = 2

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


def plan_basis(
    policy: ReminderPolicy,
    calendar: WorkingCalendar,
    kinds: Mapping[RequestKind, KindSpec],
    horizon: timedelta,
) -> str:
    """The fingerprint (SHA-256 of canonical JSON) of everything the plan is computed from.

    The kinds' clocks are in it although a pass reads each request's stored
    deadline: a table changed on purpose is one more reason to plan again, once.
    """
    document = {
        "planner": _PLANNER_VERSION,
        "horizon_seconds": horizon.total_seconds(),
        "policy": {
            key: value.isoformat() if hasattr(value, "isoformat") else value
            for key, value in dataclasses.asdict(policy).items()
        },
        "calendar": calendar.describe(),
        "kinds": {
            kind.value: {
                "law": str(spec.law) if spec.law is not None else None,
                "policy": str(spec.policy) if spec.policy is not None else None,
                "starts": spec.starts.value,
            }
            for kind, spec in sorted(kinds.items())
        },
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


async def stored_basis(session: AsyncSession, *, lock: bool = False) -> str | None:
    """The fingerprint the stored instants were planned from (``None``: none yet).

    ``lock`` takes the row for update (PostgreSQL; SQLite has one writer anyway).
    """
    query = select(SchedulerState.value).where(SchedulerState.name == PLAN_BASIS)
    if lock:
        query = query.with_for_update()
    return await session.scalar(query)


async def adopt_basis(session: AsyncSession, basis: str, now: datetime) -> int | None:
    """Store ``basis``; when another one was stored, set every open request's instant
    back to NULL, in the caller's transaction.

    Returns how many requests were set back, or ``None`` when ``basis`` was stored
    already. The fingerprint is replaced only where it still holds the value read,
    so of two schedulers adopting at once the second fails (:class:`BasisChanged`)
    and reads the stored one again.
    """
    old = await stored_basis(session, lock=True)
    if old == basis:
        return None
    if old is None:
        written = await session.scalar(
            upsert(session, SchedulerState)
            .values(name=PLAN_BASIS, value=basis, updated_at=now)
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(SchedulerState.name)
        )
    else:
        written = await session.scalar(
            update(SchedulerState)
            .where(SchedulerState.name == PLAN_BASIS, SchedulerState.value == old)
            .values(value=basis, updated_at=now)
            .returning(SchedulerState.name)
        )
    if written is None:
        raise BasisChanged("another scheduler stored a plan basis meanwhile")
    unplanned = await session.execute(
        update(Request)
        .where(Request.closed_at.is_(None), Request.next_notice_at.is_not(None))
        .values(next_notice_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(unplanned.rowcount)  # type: ignore[attr-defined]


class BasisChanged(RuntimeError):
    """The stored plan basis changed under a scheduler's feet; it reads it again."""


async def set_next_notices(
    session: AsyncSession, planned: Sequence[tuple[int, int, datetime]], basis: str
) -> bool:
    """Record ``(request id, version read, next notice instant)`` for each planned request.

    A row whose version moved since it was read (it changed meanwhile) is left
    alone, so it stays NULL for the next pass to plan from what it is now. The
    version is not bumped: the scheduler's bookkeeping must not make a staff
    member's concurrent change fail as a conflict.

    Nothing is written, and ``False`` returned, unless ``basis`` (what these
    instants were computed from) is the stored one: the stored row is read with
    a share lock, so an adoption of another basis either waits for this
    transaction (and then sets these rows back to NULL) or has committed
    before it (and this writes nothing).
    """
    if not planned:
        return True
    held = await session.scalar(
        select(SchedulerState.value)
        .where(SchedulerState.name == PLAN_BASIS)
        .with_for_update(read=True)
    )
    if held != basis:
        return False
    await session.execute(
        _SET_NEXT,
        [{"request_id": rid, "read_version": version, "at": at} for rid, version, at in planned],
    )
    return True
