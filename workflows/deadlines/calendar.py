"""Working days in Kazakhstan, in ``Asia/Almaty`` local dates.

Weekends, public holidays and their observed days come from the ``holidays``
package (country ``KZ``). The government's yearly transfers (an extra day off,
a Saturday that becomes a working day) reach that package late, so an operator
adds them in a small TOML file (top-level lists, or one table per year)::

    # calendar.toml
    days_off = [2026-12-31]
    working_days = [2026-12-19]

    [2027]
    days_off = ["2027-01-03"]

Deadline rules: the day a clock starts does not count; a deadline that lands on
a non-working day moves to the next working day; the deadline is the end of
that local day.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import holidays

DEFAULT_TIMEZONE = "Asia/Almaty"

# A bound on every walk through the calendar: no clock is longer than a year,
# and no stretch of days off is longer than a month.
_MAX_WALK = 3660


class CalendarFileError(ValueError):
    """The operator's calendar file cannot be read; the message says where and why."""


class WorkingCalendar:
    """Answers "is this a working day" and does the deadline arithmetic."""

    def __init__(
        self,
        tz: str = DEFAULT_TIMEZONE,
        *,
        days_off: Iterable[date] = (),
        working_days: Iterable[date] = (),
    ) -> None:
        self.tz = ZoneInfo(tz)
        self.timezone = tz
        self.days_off = frozenset(days_off)
        self.working_days = frozenset(working_days)
        both = self.days_off & self.working_days
        if both:
            listed = ", ".join(sorted(d.isoformat() for d in both))
            raise CalendarFileError(f"{listed} listed both as a day off and as a working day")
        self._holidays = holidays.country_holidays("KZ", observed=True)

    @classmethod
    def from_file(cls, path: Path | str | None, tz: str = DEFAULT_TIMEZONE) -> WorkingCalendar:
        """The calendar with the operator's transfers from ``path`` (or none)."""
        if path is None:
            return cls(tz)
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CalendarFileError(f"{path}: cannot be read ({exc.strerror})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CalendarFileError(f"{path}: not valid TOML ({exc})") from None
        # Either top-level lists, or one table per year ([2026]) holding them.
        sections: list[tuple[str, dict[str, Any]]] = [("", data)]
        for key, value in data.items():
            if isinstance(value, dict):
                if not key.isdigit():
                    raise CalendarFileError(f"{path}: unknown table [{key}]; name it by year")
                sections.append((f"{key}.", value))
        days_off: list[date] = []
        working_days: list[date] = []
        for prefix, section in sections:
            keys = {k for k, v in section.items() if not (prefix == "" and isinstance(v, dict))}
            unknown = sorted(keys - {"days_off", "working_days"})
            if unknown:
                raise CalendarFileError(
                    f"{path}: unknown key {prefix}{unknown[0]!r}; use days_off and working_days"
                )
            days_off += _dates(path, prefix + "days_off", section.get("days_off", []))
            working_days += _dates(path, prefix + "working_days", section.get("working_days", []))
        return cls(tz, days_off=days_off, working_days=working_days)

    def describe(self) -> dict[str, Any]:
        """Everything its answers are computed from, as plain values (for a fingerprint).

        The public holidays are named by the ``holidays`` package's version: its
        data is code, so the version says which dates it holds.
        """
        return {
            "timezone": self.timezone,
            "holidays": f"KZ observed, holidays {metadata.version('holidays')}",
            "days_off": sorted(day.isoformat() for day in self.days_off),
            "working_days": sorted(day.isoformat() for day in self.working_days),
        }

    # -- days ----------------------------------------------------------------

    def is_holiday(self, day: date) -> bool:
        return day in self._holidays

    def holiday_name(self, day: date) -> str | None:
        name = self._holidays.get(day)
        return str(name) if name is not None else None

    def is_working_day(self, day: date) -> bool:
        if day in self.working_days:
            return True
        if day in self.days_off:
            return False
        return day.weekday() < 5 and day not in self._holidays

    def next_working_day(self, day: date) -> date:
        """The first working day strictly after ``day``."""
        return self.roll_forward(day + timedelta(days=1))

    def roll_forward(self, day: date) -> date:
        """``day`` itself if it is a working day, else the next working day."""
        for _ in range(_MAX_WALK):
            if self.is_working_day(day):
                return day
            day += timedelta(days=1)
        raise ValueError("no working day within ten years")  # pragma: no cover

    def add_working_days(self, start: date, count: int) -> date:
        """The ``count``-th working day after ``start`` (``start`` does not count)."""
        if count < 0:
            raise ValueError("count must not be negative")
        if count == 0:
            return self.roll_forward(start)
        day = start
        for _ in range(count):
            day = self.next_working_day(day)
        return day

    def add_calendar_days(self, start: date, count: int) -> date:
        """``count`` calendar days after ``start``, moved to a working day if needed."""
        if count < 0:
            raise ValueError("count must not be negative")
        return self.roll_forward(start + timedelta(days=count))

    def working_days_between(self, start: date, end: date) -> int:
        """Working days after ``start`` up to and including ``end``; negative when reversed."""
        if end < start:
            return -self.working_days_between(end, start)
        span = (end - start).days
        if span > _MAX_WALK:
            raise ValueError("span longer than ten years")
        return sum(
            1 for offset in range(1, span + 1) if self.is_working_day(start + timedelta(offset))
        )

    # -- instants --------------------------------------------------------------

    def local_date(self, instant: datetime) -> date:
        """The local (Almaty) date of an aware instant."""
        if instant.tzinfo is None:
            raise ValueError("give an aware datetime")
        return instant.astimezone(self.tz).date()

    def local_time(self, instant: datetime) -> datetime:
        if instant.tzinfo is None:
            raise ValueError("give an aware datetime")
        return instant.astimezone(self.tz)

    def end_of_day(self, day: date) -> datetime:
        """The last instant of ``day`` in local time, as an aware datetime."""
        return datetime.combine(day, time(23, 59, 59, 999999), tzinfo=self.tz)

    def start_of_day(self, day: date) -> datetime:
        return datetime.combine(day, time(0, 0), tzinfo=self.tz)


def _dates(path: Path, key: str, values: Any) -> list[date]:
    if not isinstance(values, list):
        raise CalendarFileError(f"{path}: {key} must be a list of dates such as [2026-12-19]")
    result: list[date] = []
    for value in values:
        if isinstance(value, datetime) or not isinstance(value, date):
            if isinstance(value, str):
                try:
                    result.append(date.fromisoformat(value))
                    continue
                except ValueError:
                    pass
            raise CalendarFileError(
                f"{path}: {key} holds {value!r}, which is not a date such as 2026-12-19"
            )
        result.append(value)
    return result
