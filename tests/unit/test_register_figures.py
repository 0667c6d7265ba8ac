"""The register page's figures: what counts as answered, on time, overdue, and in the period."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from workflows.deadlines.calendar import WorkingCalendar
from workflows.register.figures import register_figures, working_days_to_answer
from workflows.snapshots import RequestView

CALENDAR = WorkingCalendar()
# Friday 11 December 2026, 12:00 in Almaty.
NOW = datetime(2026, 12, 11, 7, 0, tzinfo=UTC)


def local(day: date, hour: int = 10) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=CALENDAR.tz)


def view(number: int, **values: Any) -> RequestView:
    base: dict[str, Any] = {
        "id": number,
        "reference": f"DSR-2026-{number:06d}",
        "kind": "access",
        "status": "verified",
        "channel": "telegram",
        "language": "kk",
        "received_at": local(date(2026, 12, 1)),
        "clock_started_at": None,
        "due_at": CALENDAR.end_of_day(date(2026, 12, 4)),
        "verified_at": None,
        "verified_by": None,
        "customer_matched": False,
        "assignee_id": None,
        "assignee_name": None,
        "closed_at": None,
        "subject_id": number,
        "subject_telegram_user_id": None,
    }
    return RequestView(**{**base, **values})


def test_only_answers_count_and_on_time_means_closed_by_the_deadline() -> None:
    due = CALENDAR.end_of_day(date(2026, 12, 4))
    views = [
        view(1, status="completed", closed_at=due - timedelta(hours=1)),
        view(2, status="rejected", closed_at=due + timedelta(seconds=1), kind="complaint"),
        view(3, status="cancelled", closed_at=due + timedelta(days=9)),
        view(4, status="expired", closed_at=due + timedelta(days=9)),
        view(5),  # open
    ]

    figures = register_figures(views, CALENDAR, NOW)

    assert (figures.on_time.answered, figures.on_time.on_time) == (2, 1)
    assert figures.on_time.rate == 0.5
    assert figures.on_time_by_kind["access"].rate == 1.0
    assert figures.on_time_by_kind["complaint"].rate == 0.0
    assert figures.total == 5 and figures.by_status["cancelled"] == 1


def test_working_days_to_answer_follow_the_operators_transfers() -> None:
    # Received Monday 7 December, answered Friday 11 December: four working days ...
    answered = view(
        1,
        status="completed",
        received_at=local(date(2026, 12, 7)),
        closed_at=local(date(2026, 12, 11)),
    )
    assert working_days_to_answer(answered, CALENDAR) == 4
    # ... three when the operator made Wednesday 9 December a day off.
    transferred = WorkingCalendar(days_off=[date(2026, 12, 9)])
    assert working_days_to_answer(answered, transferred) == 3
    quick = view(
        2,
        status="completed",
        received_at=local(date(2026, 12, 7)),
        closed_at=local(date(2026, 12, 8)),
    )
    figures = register_figures([answered, quick], transferred, NOW)
    assert figures.median_working_days == 2  # the median of 1 and 3
    assert figures.median_by_kind == {"access": 2}


def test_overdue_is_open_past_the_end_of_the_due_day_counted_in_calendar_days() -> None:
    late = view(1, due_at=CALENDAR.end_of_day(date(2026, 12, 8)))  # three days ago
    due_today = view(2, due_at=CALENDAR.end_of_day(date(2026, 12, 11)))
    closed_late = view(
        3, status="completed", closed_at=NOW, due_at=CALENDAR.end_of_day(date(2026, 12, 1))
    )

    figures = register_figures([due_today, closed_late, late], CALENDAR, NOW)

    # Soonest deadline first, whatever order the views came in.
    assert [item.reference for item in figures.open] == [late.reference, due_today.reference]
    assert [(item.reference, item.days_overdue) for item in figures.overdue] == [
        (late.reference, 3)
    ]
    assert figures.open[1].days_overdue == 0 and figures.open[1].due == date(2026, 12, 11)


def test_the_period_is_by_local_date_of_receipt_and_every_month_is_shown() -> None:
    # 31 January 2026, 20:00 UTC is already 1 February in Almaty.
    february = view(1, received_at=datetime(2026, 1, 31, 20, 0, tzinfo=UTC))
    january = view(2, received_at=local(date(2026, 1, 15)))
    april = view(3, received_at=local(date(2026, 4, 2)), kind="complaint", channel="post")

    everything = register_figures([february, january, april], CALENDAR, NOW)
    # Up to today's month (December), the months without a request too.
    assert everything.months == tuple(f"2026-{month:02d}" for month in range(1, 13))
    assert everything.by_kind_month == {
        "access": {"2026-02": 1, "2026-01": 1},
        "complaint": {"2026-04": 1},
    }
    assert everything.by_channel == {"telegram": 2, "post": 1}

    chosen = register_figures(
        [february, january, april], CALENDAR, NOW, start=date(2026, 2, 1), end=date(2026, 3, 31)
    )
    assert chosen.total == 1 and chosen.by_kind == {"access": 1}
    assert chosen.months == ("2026-02", "2026-03")
    assert chosen.period == (date(2026, 2, 1), date(2026, 3, 31))
    # Unbounded: from the first request received to today.
    assert everything.period == (date(2026, 1, 15), date(2026, 12, 11))


def test_an_empty_register_has_no_rate_and_no_median() -> None:
    figures = register_figures([], CALENDAR, NOW)

    assert figures.total == 0 and figures.on_time.rate is None
    assert figures.median_working_days is None and figures.open == ()
    assert figures.months == ("2026-12",)
    assert figures.period == (date(2026, 12, 11), date(2026, 12, 11))
