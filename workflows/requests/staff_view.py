"""What staff see of requests and may do next: days left, the queue's figures, the pre-checks.

A channel renders these in its own words; the rules behind them (which clock
counts the days left, when an approval still waits for a second one, what
refuses an approval before any work is asked for) are the core's.
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol

from workflows.deadlines.calendar import WorkingCalendar
from workflows.errors import KindUndecided
from workflows.kinds import DayUnit, KindSpec, RequestKind
from workflows.requests.classification import running_clock
from workflows.requests.states import CLOSED, Action, Status, next_status
from workflows.snapshots import Actor, RequestView


class Left(enum.Enum):
    """What is left of a request's clock."""

    NO_DUE = "no_due"
    CLOSED = "closed"
    OVERDUE = "overdue"  # ``days`` past the due day
    TODAY = "today"
    WORKING = "working"  # ``days`` working days to go
    CALENDAR = "calendar"  # ``days`` calendar days to go


@dataclass(frozen=True)
class DaysLeft:
    """The due day (local) and what is left until it."""

    due: date | None
    left: Left
    days: int = 0


def days_left(
    view: RequestView,
    calendar: WorkingCalendar,
    now: datetime,
    kinds: Mapping[RequestKind, KindSpec],
) -> DaysLeft:
    """The due day and the days left, counted in the unit of the kind's running clock."""
    if view.due_at is None:
        return DaysLeft(None, Left.NO_DUE)
    due = calendar.local_date(view.due_at)
    if not view.is_open:
        return DaysLeft(due, Left.CLOSED)
    today = calendar.local_date(now)
    if due < today:
        return DaysLeft(due, Left.OVERDUE, (today - due).days)
    if due == today:
        return DaysLeft(due, Left.TODAY)
    started = view.clock_started_at or view.received_at
    clock = running_clock(RequestKind(view.kind), view.candidates, started, kinds, calendar)
    if clock.unit is DayUnit.WORKING:
        return DaysLeft(due, Left.WORKING, calendar.working_days_between(today, due))
    return DaysLeft(due, Left.CALENDAR, (due - today).days)


@dataclass(frozen=True)
class QueueFigures:
    """The desk at a glance: open requests, due this week, overdue, median days to close."""

    open: int
    due_this_week: int
    overdue: int
    median_days: float | None  # None: nothing closed yet


def queue_figures(
    views: Sequence[RequestView], calendar: WorkingCalendar, now: datetime
) -> QueueFigures:
    """The figures of ``views`` (every request) at ``now``; the week ends on Sunday."""
    today = calendar.local_date(now)
    week_end = today + timedelta(days=6 - today.weekday())
    open_views = [v for v in views if v.is_open]
    due_this_week = [
        v
        for v in open_views
        if v.due_at is not None and today <= calendar.local_date(v.due_at) <= week_end
    ]
    durations = [
        (v.closed_at - v.received_at).total_seconds() / 86400
        for v in views
        if v.closed_at is not None
    ]
    return QueueFigures(
        open=len(open_views),
        due_this_week=len(due_this_week),
        overdue=sum(1 for v in open_views if v.is_overdue(now)),
        median_days=statistics.median(durations) if durations else None,
    )


def kind_changeable(view: RequestView) -> bool:
    """Staff may still set the kind: open, and its work (which follows the kind) not begun."""
    status = Status(view.status)
    return status not in CLOSED and status is not Status.APPROVED


def waiting_for_approvals(view: RequestView) -> bool:
    """Approvals are recorded, but not enough yet for the work to be done (four eyes)."""
    return bool(view.approvals) and view.status not in (
        Status.APPROVED.value,
        Status.COMPLETED.value,
    )


class _Requests(Protocol):
    """What of the request service the pre-checks read."""

    async def get(self, reference: str, *, with_events: bool = False) -> RequestView: ...

    async def may_approve(self, reference: str, staff: Actor) -> None: ...


async def approvable(requests: _Requests, reference: str, staff: Actor) -> RequestView:
    """The request ``staff`` are about to approve, or what approving would refuse them.

    Asked before staff are asked for the approval's work (values, fields), so
    nobody types them only to be told no: the same person twice on a four-eyes
    kind, their own request, an undecided kind, a state that cannot be approved.
    """
    await requests.may_approve(reference, staff)
    return await requests.get(reference)


async def completable(requests: _Requests, reference: str) -> RequestView:
    """The approved request staff are about to complete, or why it cannot be completed."""
    current = await requests.get(reference)
    if current.kind == RequestKind.UNCLASSIFIED.value:
        raise KindUndecided(reference)
    next_status(Status(current.status), Action.COMPLETE)
    return current
