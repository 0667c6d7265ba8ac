"""What staff see of a request, without a bot: days left, the queue's figures, the pre-checks."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from workflows.deadlines.calendar import WorkingCalendar
from workflows.errors import IllegalTransition, KindUndecided
from workflows.kinds import DEFAULT_KINDS
from workflows.requests.staff_view import (
    Left,
    approvable,
    completable,
    days_left,
    kind_changeable,
    queue_figures,
    waiting_for_approvals,
)
from workflows.snapshots import Actor, RequestView

CALENDAR = WorkingCalendar()
# Wednesday 2026-12-09, noon in Almaty.
NOW = datetime(2026, 12, 9, 7, 0, tzinfo=UTC)


def request(kind: str = "complaint", status: str = "in_review", **changes: object) -> RequestView:
    view = RequestView(
        id=1,
        reference="DSR-1",
        kind=kind,
        status=status,
        channel="telegram",
        language="ru",
        received_at=NOW - timedelta(days=2),
        clock_started_at=None,
        due_at=None,
        verified_at=None,
        verified_by=None,
        customer_matched=False,
        assignee_id=None,
        assignee_name=None,
        closed_at=None,
        subject_id=1,
        subject_telegram_user_id=None,
    )
    return replace(view, **changes)  # type: ignore[arg-type]


def test_the_days_left_are_counted_in_the_unit_of_the_kinds_clock() -> None:
    due = NOW + timedelta(days=5)  # Monday 2026-12-14
    calendar_days = days_left(request("complaint", due_at=due), CALENDAR, NOW, DEFAULT_KINDS)
    working_days = days_left(request("rectify", due_at=due), CALENDAR, NOW, DEFAULT_KINDS)
    assert (calendar_days.left, calendar_days.days) == (Left.CALENDAR, 5)
    assert (working_days.left, working_days.days) == (Left.WORKING, 3)  # Thu, Fri, Mon


def test_a_due_day_passed_today_or_closed_says_so() -> None:
    overdue = days_left(request(due_at=NOW - timedelta(days=2)), CALENDAR, NOW, DEFAULT_KINDS)
    assert (overdue.left, overdue.days) == (Left.OVERDUE, 2)
    assert days_left(request(due_at=NOW), CALENDAR, NOW, DEFAULT_KINDS).left is Left.TODAY
    closed = request(status="completed", due_at=NOW - timedelta(days=2), closed_at=NOW)
    assert days_left(closed, CALENDAR, NOW, DEFAULT_KINDS).left is Left.CLOSED
    assert days_left(request(), CALENDAR, NOW, DEFAULT_KINDS).left is Left.NO_DUE


def test_the_queue_figures_count_open_due_this_week_overdue_and_the_median_days() -> None:
    views = [
        request(due_at=NOW + timedelta(days=3)),  # Saturday: this week
        request(due_at=NOW + timedelta(days=5)),  # Monday: next week
        request(due_at=NOW - timedelta(days=1)),  # overdue: not among the days still to come
        request(status="completed", closed_at=NOW, received_at=NOW - timedelta(days=2)),
        request(status="rejected", closed_at=NOW, received_at=NOW - timedelta(days=5)),
    ]
    figures = queue_figures(views, CALENDAR, NOW)
    assert (figures.open, figures.due_this_week, figures.overdue) == (3, 1, 1)
    assert figures.median_days == pytest.approx(3.5)
    assert queue_figures(views[:3], CALENDAR, NOW).median_days is None


def test_what_staff_may_still_do_follows_the_state() -> None:
    assert kind_changeable(request(status="in_review"))
    assert not kind_changeable(request(status="approved"))
    assert not kind_changeable(request(status="completed"))
    assert waiting_for_approvals(request("delete_account", approvals=("Alice",)))
    assert not waiting_for_approvals(request("delete_account", status="approved", approvals=("A",)))


class Requests:
    """The request service as the pre-checks see it: one request, and what approving says."""

    def __init__(self, view: RequestView, refusal: Exception | None = None) -> None:
        self.view, self.refusal = view, refusal

    async def get(self, reference: str, *, with_events: bool = False) -> RequestView:
        return self.view

    async def may_approve(self, reference: str, staff: Actor) -> None:
        if self.refusal is not None:
            raise self.refusal


async def test_a_refused_approval_is_refused_before_the_request_is_read() -> None:
    staff = Actor.staff(7, "Alice")
    view = request("rectify")
    assert await approvable(Requests(view), "DSR-1", staff) == view
    with pytest.raises(KindUndecided):
        await approvable(Requests(view, KindUndecided("DSR-1")), "DSR-1", staff)


async def test_only_an_approved_request_of_a_decided_kind_is_completable() -> None:
    approved = request("rectify", status="approved")
    assert await completable(Requests(approved), "DSR-1") == approved
    with pytest.raises(IllegalTransition):
        await completable(Requests(request("rectify", status="in_review")), "DSR-1")
    with pytest.raises(KindUndecided):
        await completable(Requests(request("unclassified", status="approved")), "DSR-1")
