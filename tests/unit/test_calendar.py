"""Deadline arithmetic: the issue's worked examples and properties that must always hold."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.paths import REPO
from workflows.deadlines.calendar import CalendarFileError, WorkingCalendar
from workflows.kinds import CLASSIFIED_KINDS, DEFAULT_KINDS, ClockSpec, DayUnit, RequestKind

CALENDAR = WorkingCalendar()
ALMATY = "+05:00"


def deadline(length: int, unit: DayUnit, start: date, calendar: WorkingCalendar = CALENDAR) -> date:
    """The deadline's local date for a clock started at noon (Almaty) on ``start``."""
    started = datetime(start.year, start.month, start.day, 7, 0, tzinfo=UTC)  # 12:00 local
    due = ClockSpec(length, unit).deadline(started, calendar)
    assert due.isoformat().endswith("23:59:59.999999" + ALMATY)  # the end of the local day
    return due.date()


def test_seven_working_days_skip_nauryz_and_the_weekends() -> None:
    assert deadline(7, DayUnit.WORKING, date(2026, 3, 20)) == date(2026, 4, 3)


def test_one_working_day_skips_independence_day() -> None:
    assert deadline(1, DayUnit.WORKING, date(2026, 12, 15)) == date(2026, 12, 17)


def test_thirty_calendar_days_landing_on_a_holiday_move_to_the_next_working_day() -> None:
    assert deadline(30, DayUnit.CALENDAR, date(2026, 11, 16)) == date(2026, 12, 17)
    assert deadline(30, DayUnit.CALENDAR, date(2026, 11, 24)) == date(2026, 12, 24)


def test_a_working_saturday_from_the_calendar_file_counts(tmp_path: Path) -> None:
    path = tmp_path / "calendar.toml"
    path.write_text("working_days = [2026-12-19]\n")
    with_transfer = WorkingCalendar.from_file(path)

    assert deadline(1, DayUnit.WORKING, date(2026, 12, 18), with_transfer) == date(2026, 12, 19)
    # Without the file the same clock runs to Monday.
    assert deadline(1, DayUnit.WORKING, date(2026, 12, 18)) == date(2026, 12, 21)


def test_an_extra_day_off_from_the_calendar_file_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "calendar.toml"
    path.write_text('[2026]\ndays_off = ["2026-12-31"]\n')
    with_day_off = WorkingCalendar.from_file(path)

    assert not with_day_off.is_working_day(date(2026, 12, 31))
    assert deadline(1, DayUnit.WORKING, date(2026, 12, 30), with_day_off) == date(2027, 1, 5)


def test_the_local_date_decides_not_the_utc_date() -> None:
    # 20:30 UTC on Monday 14 December is already 01:30 on Tuesday in Almaty.
    started = datetime(2026, 12, 14, 20, 30, tzinfo=UTC)
    due = ClockSpec(1, DayUnit.WORKING).deadline(started, CALENDAR)
    assert due.date() == date(2026, 12, 17)
    assert due.utcoffset() == timedelta(hours=5)


def test_the_example_calendar_file_in_the_repository_loads() -> None:
    example = WorkingCalendar.from_file(REPO / "calendar.example.toml")
    # Its lists are empty, to be filled in: it changes nothing until then.
    assert example.describe() == CALENDAR.describe()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("days_off = [", "not valid TOML"),
        ('days_off = ["next friday"]', "days_off"),
        ("holidays = []", "unknown key"),
        ("days_off = 2026-12-31", "must be a list"),
        ("days_off = [2026-12-19]\nworking_days = [2026-12-19]", "both"),
        ("[next-year]\ndays_off = []", "by year"),
    ],
)
def test_a_bad_calendar_file_says_what_is_wrong(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "calendar.toml"
    path.write_text(content)
    with pytest.raises(CalendarFileError, match=words):
        WorkingCalendar.from_file(path)


def test_working_days_between_counts_the_days_left() -> None:
    # From Tuesday 15 December to Friday 18 December: 17 and 18 (16th is a holiday).
    assert CALENDAR.working_days_between(date(2026, 12, 15), date(2026, 12, 18)) == 2
    assert CALENDAR.working_days_between(date(2026, 12, 18), date(2026, 12, 15)) == -2


starts = st.dates(min_value=date(2025, 1, 1), max_value=date(2028, 12, 31))
clocks = st.builds(ClockSpec, st.integers(min_value=1, max_value=60), st.sampled_from(DayUnit))


def _noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 7, 0, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(start=starts, clock=clocks)
def test_a_deadline_is_a_working_day_after_the_start(start: date, clock: ClockSpec) -> None:
    due = CALENDAR.local_date(clock.deadline(_noon(start), CALENDAR))
    assert CALENDAR.is_working_day(due)
    assert due > start
    if clock.unit is DayUnit.CALENDAR:
        assert due >= start + timedelta(days=clock.length)
    else:
        assert CALENDAR.working_days_between(start, due) == clock.length


@settings(max_examples=300, deadline=None)
@given(first=starts, gap=st.integers(min_value=0, max_value=40), clock=clocks)
def test_a_later_start_never_gives_an_earlier_deadline(
    first: date, gap: int, clock: ClockSpec
) -> None:
    second = first + timedelta(days=gap)
    assert clock.deadline(_noon(first), CALENDAR) <= clock.deadline(_noon(second), CALENDAR)


@settings(max_examples=200, deadline=None)
@given(start=starts, kind=st.sampled_from(CLASSIFIED_KINDS))
def test_the_running_clock_is_never_later_than_either_promise(
    start: date, kind: RequestKind
) -> None:
    spec = DEFAULT_KINDS[kind]
    due = spec.due_at(_noon(start), CALENDAR)
    assert CALENDAR.is_working_day(CALENDAR.local_date(due))
    for clock in spec.clocks:
        assert due <= clock.deadline(_noon(start), CALENDAR)
