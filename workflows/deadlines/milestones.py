"""What the deadline workflow owes a request, derived from its clock alone.

Given when a request's clock started and when it runs out, :func:`milestones`
lists every notice it is owed up to a day: to the person, a weekly "still in
progress" for clocks longer than a week, a "deadline near" a few working days
before (for a clock too short for that, on the working day before the
deadline, or on its morning for a clock of one working day), so that every
clock has at least one, and an apology the first working day after a deadline
that passed unmet; to staff, reminders at the milestones of the clock and an overdue alarm
every working day after it. Nothing here reads the database or the time: the
scheduler compares this list with the notices already recorded.

Notices of one series stand for each other: when several are due at once
(after downtime), only the latest is sent. Staff's reminders and alarms are one
series, so a reminder whose day was missed is folded into the one that says
what is true now: after downtime past the deadline, only the overdue alarm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from workflows.deadlines.calendar import WorkingCalendar

HALF = "half"
OVERDUE = "overdue"
# Every staff reminder and alarm of a request: the latest due stands for the others.
STAFF_SERIES = "staff"
# The person's "we are working on it" notices; after the deadline none of them is true.
PERSON_SERIES = "person"
# The person's apology once the deadline has passed unmet: a series of its own.
MISSED_SERIES = "person/missed"
DEFAULT_STAFF_MILESTONES: tuple[str, ...] = (HALF, "3", "1", "0", OVERDUE)

# Bounds on every walk: no clock is longer than a year, no overdue list longer than ten.
_MAX_DAYS = 3660
_MAX_BEFORE = 60


class MilestoneError(ValueError):
    """A milestone setting cannot be read; the message says which part."""


def parse_staff_milestones(text: str | Sequence[str]) -> tuple[str, ...]:
    """Read ``half,3,1,0,overdue``: half the clock gone, N working days before
    the deadline (0: on the day), and every working day once it is overdue."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    result: list[str] = []
    for raw in parts:
        part = str(raw).strip().lower()
        if not part:
            continue
        if part in (HALF, OVERDUE):
            value = part
        elif part.isdigit() and int(part) <= _MAX_BEFORE:
            value = str(int(part))
        else:
            raise MilestoneError(
                f"{part!r} is not a milestone: use half, overdue or a number of working "
                f"days before the deadline (0 to {_MAX_BEFORE}), e.g. half,3,1,0,overdue"
            )
        if value not in result:
            result.append(value)
    return tuple(result)


@dataclass(frozen=True)
class ReminderPolicy:
    """When the person and staff hear from the scheduler (the settings' defaults)."""

    staff: tuple[str, ...] = DEFAULT_STAFF_MILESTONES
    deadline_near_days: int = 3
    progress_every_days: int = 7
    notify_at: time = time(9, 0)
    # Weekends and holidays carry nothing but the overdue alarm.
    quiet_days: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "staff", parse_staff_milestones(self.staff))
        if not 0 < self.deadline_near_days <= _MAX_BEFORE:
            raise MilestoneError(f"deadline_near_days must be 1 to {_MAX_BEFORE}")
        if not 0 < self.progress_every_days <= 366:
            raise MilestoneError("progress_every_days must be 1 to 366")

    def instant(self, day: date, calendar: WorkingCalendar) -> datetime:
        """When a notice meant for ``day`` goes out: ``notify_at`` local time."""
        return datetime.combine(day, self.notify_at, tzinfo=calendar.tz)

    def is_quiet(self, day: date, calendar: WorkingCalendar) -> bool:
        return self.quiet_days and not calendar.is_working_day(day)


@dataclass(frozen=True)
class Milestone:
    """One notice a request is owed.

    ``name`` is unique per request and stable, so with the reference it is
    the idempotency key. Notices of one ``series`` replace each other when
    several were missed: only the latest is sent. ``any_day`` ones may go out
    on a quiet day.
    """

    name: str
    day: date
    to_staff: bool
    template: str
    series: str
    any_day: bool = False
    days_before: int | None = field(default=None, compare=False)


def working_days_before(calendar: WorkingCalendar, day: date, count: int) -> date:
    """The ``count``-th working day before ``day`` (``day`` itself does not count)."""
    current = day
    found = 0
    for _ in range(_MAX_DAYS):
        if found == count:
            return current
        current -= timedelta(days=1)
        if calendar.is_working_day(current):
            found += 1
    raise ValueError("no such working day within ten years")  # pragma: no cover


def milestones(
    started_at: datetime,
    due_at: datetime,
    calendar: WorkingCalendar,
    policy: ReminderPolicy,
    until: date,
) -> list[Milestone]:
    """Every notice a request whose clock runs from ``started_at`` to ``due_at`` is
    owed on days up to ``until``, in order of day."""
    start = calendar.local_date(started_at)
    due = calendar.local_date(due_at)
    owed = _staff(start, due, calendar, policy, until) + _person(start, due, calendar, policy)
    return sorted((m for m in owed if m.day <= until), key=lambda m: (m.day, m.name))


def _staff(
    start: date, due: date, calendar: WorkingCalendar, policy: ReminderPolicy, until: date
) -> list[Milestone]:
    total = calendar.working_days_between(start, due)
    by_day: dict[date, Milestone] = {}

    def offer(milestone: Milestone) -> None:
        # Two milestones on one day: the one nearer the deadline says more.
        if milestone.day <= start:
            return
        held = by_day.get(milestone.day)
        if held is None or _urgency(milestone) < _urgency(held):
            by_day[milestone.day] = milestone

    for token in policy.staff:
        if token == HALF:
            if total >= 2:
                day = calendar.add_working_days(start, math.ceil(total / 2))
                left = calendar.working_days_between(day, due)
                offer(
                    Milestone("staff/half", day, True, "staff_reminder", STAFF_SERIES, False, left)
                )
        elif token != OVERDUE:
            count = int(token)
            day = due if count == 0 else working_days_before(calendar, due, count)
            name = "staff/on_day" if count == 0 else f"staff/before/{count}"
            offer(Milestone(name, day, True, "staff_reminder", STAFF_SERIES, False, count))
    owed = list(by_day.values())
    if OVERDUE in policy.staff:
        # The first alarm goes out the day after the deadline whatever day it is;
        # then every working day (every day when no day is quiet).
        day = due + timedelta(days=1)
        first = True
        for _ in range(_MAX_DAYS):
            if day > until:
                break
            if first or not policy.is_quiet(day, calendar):
                owed.append(
                    Milestone(
                        f"staff/overdue/{day.isoformat()}",
                        day,
                        True,
                        "staff_overdue",
                        STAFF_SERIES,
                        any_day=True,
                    )
                )
            first = False
            day += timedelta(days=1)
    return owed


def _urgency(milestone: Milestone) -> tuple[int, bool]:
    return (milestone.days_before or 0, milestone.name == "staff/half")


def _person(
    start: date, due: date, calendar: WorkingCalendar, policy: ReminderPolicy
) -> list[Milestone]:
    near = _deadline_near(start, due, calendar, policy)
    owed = [Milestone("person/deadline_near", near, False, "deadline_near", PERSON_SERIES)]
    every = policy.progress_every_days
    if (due - start).days > every:
        for n in range(1, _MAX_DAYS // every + 1):
            day = start + timedelta(days=every * n)
            if policy.quiet_days:
                day = calendar.roll_forward(day)
            # The "deadline near" notice says it all from its day on.
            if day >= due or day >= near:
                break
            owed.append(
                Milestone(f"person/progress/{n}", day, False, "still_in_progress", PERSON_SERIES)
            )
    # The first morning after the deadline (the first working one, when days off are
    # quiet); the scheduler sends it only while the request is still open.
    missed = due + timedelta(days=1)
    if policy.quiet_days:
        missed = calendar.roll_forward(missed)
    owed.append(
        Milestone("person/deadline_missed", missed, False, "deadline_missed", MISSED_SERIES)
    )
    return owed


def _deadline_near(
    start: date, due: date, calendar: WorkingCalendar, policy: ReminderPolicy
) -> date:
    """The day of the person's "deadline near" notice: ``deadline_near_days`` working days
    before the deadline; when that is not after the clock's start, the working day before
    the deadline; when that is not either (a clock of one working day), the deadline's
    own morning. So no clock runs out without the person hearing from us."""
    for day in (
        working_days_before(calendar, due, policy.deadline_near_days),
        working_days_before(calendar, due, 1),
    ):
        if day > start:
            return day
    return due
