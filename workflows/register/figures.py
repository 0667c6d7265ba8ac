"""The register's figures for a period: counts, the on-time rate, working days to answer, overdue.

Everything is computed from the :class:`~workflows.snapshots.RequestView` values
that ``aina-dsr requests list`` prints, with the same rules: a request is open
while it has no ``closed_at`` and overdue when it is open past its ``due_at``
(:meth:`RequestView.is_overdue`). The period selects requests by the local date
they were received. A request is *answered* when staff closed it with an answer
(completed or rejected); it was answered *on time* when it closed by its
deadline. Working days are the desk's calendar's (Kazakhstan's, with the
operator's transfers): the day of receipt does not count, the day of the
answer does, as for the deadlines themselves.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from workflows.deadlines.calendar import WorkingCalendar
from workflows.requests.states import Status
from workflows.snapshots import RequestView

# The ends that are an answer to the person; cancelled (by them) and expired
# (never verified) are not.
ANSWERED = frozenset({Status.COMPLETED.value, Status.REJECTED.value})


@dataclass(frozen=True)
class OnTime:
    """How many answers there were, and how many came by the deadline."""

    answered: int = 0
    on_time: int = 0

    @property
    def rate(self) -> float | None:
        """The share answered on time, 0..1 (None with no answer yet)."""
        return self.on_time / self.answered if self.answered else None

    def add(self, in_time: bool) -> OnTime:
        return OnTime(self.answered + 1, self.on_time + int(in_time))


@dataclass(frozen=True)
class OpenRequest:
    """An open request on the timeline: references and dates only, never who asked."""

    reference: str
    kind: str
    status: str
    channel: str
    received: date
    due: date | None
    days_overdue: int  # calendar days past the due date; 0 when not overdue

    @property
    def overdue(self) -> bool:
        return self.days_overdue > 0


@dataclass(frozen=True)
class RegisterFigures:
    """What the register page shows, for requests received in ``start``..``end``."""

    start: date | None
    end: date | None
    generated_at: datetime  # the desk's local time
    total: int
    months: tuple[str, ...]  # "YYYY-MM", every month of the period in order
    by_kind_month: dict[str, dict[str, int]]  # kind -> month -> requests received
    by_kind: dict[str, int]
    by_status: dict[str, int]
    by_channel: dict[str, int]
    by_language: dict[str, int]
    on_time: OnTime
    on_time_by_kind: dict[str, OnTime]
    median_working_days: float | None
    median_by_kind: dict[str, float]
    open: tuple[OpenRequest, ...]  # soonest deadline first
    first_received: date | None  # the earliest local date of receipt in the period

    @property
    def period(self) -> tuple[date, date]:
        """The period as dates: from the first request when unbounded, up to today."""
        first = self.start or min(self.first_received or self.today, self.today)
        return first, self.end or self.today

    @property
    def today(self) -> date:
        return self.generated_at.date()

    @property
    def overdue(self) -> tuple[OpenRequest, ...]:
        """The open requests past due, the longest overdue first."""
        late = [item for item in self.open if item.overdue]
        return tuple(sorted(late, key=lambda item: (-item.days_overdue, item.reference)))


def register_figures(
    views: Iterable[RequestView],
    calendar: WorkingCalendar,
    now: datetime,
    *,
    start: date | None = None,
    end: date | None = None,
) -> RegisterFigures:
    """The figures of the requests received from ``start`` to ``end`` (local dates, inclusive)."""
    today = calendar.local_date(now)
    chosen = [
        view
        for view in views
        if (start is None or calendar.local_date(view.received_at) >= start)
        and (end is None or calendar.local_date(view.received_at) <= end)
    ]
    received = [calendar.local_date(view.received_at) for view in chosen]
    by_kind_month: dict[str, dict[str, int]] = {}
    for view, day in zip(chosen, received, strict=True):
        months = by_kind_month.setdefault(view.kind, {})
        months[_month(day)] = months.get(_month(day), 0) + 1
    on_time = OnTime()
    on_time_by_kind: dict[str, OnTime] = {}
    days_by_kind: dict[str, list[int]] = {}
    for view in chosen:
        if view.status not in ANSWERED or view.closed_at is None:
            continue
        in_time = view.due_at is None or view.closed_at <= view.due_at
        on_time = on_time.add(in_time)
        on_time_by_kind[view.kind] = on_time_by_kind.get(view.kind, OnTime()).add(in_time)
        days_by_kind.setdefault(view.kind, []).append(working_days_to_answer(view, calendar))
    all_days = [days for kind_days in days_by_kind.values() for days in kind_days]
    return RegisterFigures(
        start=start,
        end=end,
        generated_at=calendar.local_time(now),
        total=len(chosen),
        months=_months(start or min([*received, today]), end or max([*received, today])),
        by_kind_month=by_kind_month,
        by_kind=_counted(view.kind for view in chosen),
        by_status=_counted(view.status for view in chosen),
        by_channel=_counted(view.channel for view in chosen),
        by_language=_counted(view.language for view in chosen),
        on_time=on_time,
        on_time_by_kind=dict(sorted(on_time_by_kind.items())),
        median_working_days=statistics.median(all_days) if all_days else None,
        median_by_kind={
            kind: statistics.median(days) for kind, days in sorted(days_by_kind.items())
        },
        open=tuple(
            sorted(
                (_open(view, calendar, now, today) for view in chosen if view.is_open),
                key=lambda item: (item.due is None, item.due or today, item.reference),
            )
        ),
        first_received=min(received, default=None),
    )


def working_days_to_answer(view: RequestView, calendar: WorkingCalendar) -> int:
    """Working days from the day of receipt (not counted) to the day of the answer (counted)."""
    if view.closed_at is None:
        raise ValueError(f"{view.reference} has no answer yet")
    return calendar.working_days_between(
        calendar.local_date(view.received_at), calendar.local_date(view.closed_at)
    )


def _open(view: RequestView, calendar: WorkingCalendar, now: datetime, today: date) -> OpenRequest:
    due = calendar.local_date(view.due_at) if view.due_at is not None else None
    late = 0
    if due is not None and view.is_overdue(now):
        # The deadline ends the due day: the day after it is the first day overdue.
        late = max((today - due).days, 1)
    return OpenRequest(
        reference=view.reference,
        kind=view.kind,
        status=view.status,
        channel=view.channel,
        received=calendar.local_date(view.received_at),
        due=due,
        days_overdue=late,
    )


def _counted(values: Iterable[str]) -> dict[str, int]:
    """Counts, the largest first (then by name)."""
    return dict(sorted(Counter(values).items(), key=lambda item: (-item[1], item[0])))


def _month(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def _months(first: date, last: date) -> tuple[str, ...]:
    """Every month from ``first``'s to ``last``'s, in order (none when reversed)."""
    months: list[str] = []
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return tuple(months)
