"""The request kinds and their clocks, read from one table (``kinds.toml``).

Each kind carries the law's clock and the policy's clock; the shorter one runs,
because a promise cannot extend a statutory duty. The table also says what
starts the clock and which fields a request of that kind cannot go without,
and everything else the desk knows of a kind: the questions the Telegram
dialog asks, whether the person may bring documents, what staff must enter
before the work is done, whether two staff members must approve, whether
the staff card shows a preview of the answer, and whether the desk does the
work itself as soon as the person is verified (``at_once``).

One kind has no row: ``unclassified``, a request whose kind the desk could not
tell. It has no clock of its own; it runs on the shortest clock of its likely
kinds (:mod:`workflows.requests.classification`) until staff pick one.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from importlib import resources
from types import MappingProxyType
from typing import Any, NamedTuple

from workflows.deadlines.calendar import WorkingCalendar


class KindTableError(ValueError):
    """The kinds table is malformed; the message names the kind and the key."""


class RequestKind(StrEnum):
    ACCESS = "access"
    RECTIFY = "rectify"
    DELETE_ACCOUNT = "delete_account"
    WITHDRAW_CONSENT = "withdraw_consent"
    UNSUBSCRIBE = "unsubscribe"
    BLOCK = "block"
    DESTROY_UNLAWFUL = "destroy_unlawful"
    COMPLAINT = "complaint"
    # Not in the table: the likely kinds' clocks run (workflows.requests.classification).
    UNCLASSIFIED = "unclassified"


# The kinds a request can finally be: each has its row in the table, and the
# Telegram dialog offers them as buttons.
CLASSIFIED_KINDS: tuple[RequestKind, ...] = tuple(
    kind for kind in RequestKind if kind is not RequestKind.UNCLASSIFIED
)


class DayUnit(StrEnum):
    WORKING = "working"
    CALENDAR = "calendar"


class ClockStart(StrEnum):
    RECEIVED = "received"
    CONFIRMATION = "confirmation"


@dataclass(frozen=True)
class ClockSpec:
    length: int
    unit: DayUnit

    def deadline(self, start: datetime, calendar: WorkingCalendar) -> datetime:
        """The end of the local day on which a clock started at ``start`` runs out."""
        day = calendar.local_date(start)
        if self.unit is DayUnit.WORKING:
            last = calendar.add_working_days(day, self.length)
        else:
            last = calendar.add_calendar_days(day, self.length)
        return calendar.end_of_day(last)

    def __str__(self) -> str:
        return f"{self.length} {self.unit.value} days"


class Question(NamedTuple):
    """One question of the dialog: the field it fills and the catalogue's message id asking it."""

    field: str
    ask: str


# The field of a question taking a phone, an e-mail or a postal address, whichever is given.
CONTACT_QUESTION = "contact"
# What staff may have to enter before the work of a kind is done (``KindSpec.staff_input``):
# the corrected values, the names of the fields destroyed, or the answer to a complaint.
STAFF_INPUTS = ("correct", "destroy", "answer")


@dataclass(frozen=True)
class KindSpec:
    kind: RequestKind
    law: ClockSpec | None
    policy: ClockSpec | None
    starts: ClockStart
    required_fields: tuple[str, ...] = ()
    one_of_fields: tuple[tuple[str, ...], ...] = ()
    law_ref: str = ""
    policy_ref: str = ""
    questions: tuple[Question, ...] = ()
    evidence: bool = False
    staff_input: str | None = None
    four_eyes: bool = False
    preview: bool = False
    at_once: bool = False

    @property
    def clocks(self) -> tuple[ClockSpec, ...]:
        return tuple(c for c in (self.law, self.policy) if c is not None)

    def due_at(self, started_at: datetime, calendar: WorkingCalendar) -> datetime:
        """The deadline: the earlier of the law's and the policy's."""
        return min(clock.deadline(started_at, calendar) for clock in self.clocks)

    def running_clock(self, started_at: datetime, calendar: WorkingCalendar) -> ClockSpec:
        """The clock whose deadline comes first for a start at ``started_at``."""
        return min(self.clocks, key=lambda clock: clock.deadline(started_at, calendar))

    def question(self, field: str) -> str | None:
        """The message id of the dialog's question for ``field``, if the kind asks it."""
        return next((q.ask for q in self.questions if q.field == field), None)

    def missing_fields(self, fields: Mapping[str, Any]) -> list[str]:
        """Required fields absent or blank; a one-of group is named ``a|b|c``."""

        def given(name: str) -> bool:
            value = fields.get(name)
            return value is not None and str(value).strip() != ""

        missing = [name for name in self.required_fields if not given(name)]
        missing += ["|".join(group) for group in self.one_of_fields if not any(map(given, group))]
        return missing


def _clock(kind: str, key: str, value: Any) -> ClockSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"length", "unit"}:
        raise KindTableError(f'{kind}.{key}: give {{ length = N, unit = "working"|"calendar" }}')
    length = value["length"]
    if not isinstance(length, int) or isinstance(length, bool) or not 0 < length <= 366:
        raise KindTableError(f"{kind}.{key}.length: a whole number of days from 1 to 366")
    try:
        unit = DayUnit(value["unit"])
    except ValueError:
        raise KindTableError(f'{kind}.{key}.unit: "working" or "calendar"') from None
    return ClockSpec(length, unit)


def _questions(kind: str, value: Any) -> tuple[Question, ...]:
    if not isinstance(value, list):
        raise KindTableError(f"{kind}.questions: a list of {{ field = ..., ask = ... }}")
    questions = []
    for item in value:
        if (
            not isinstance(item, dict)
            or set(item) != {"field", "ask"}
            or not all(isinstance(v, str) and v for v in item.values())
        ):
            raise KindTableError(f'{kind}.questions: give {{ field = "name", ask = "msgid" }}')
        questions.append(Question(item["field"], item["ask"]))
    return tuple(questions)


def _flag(kind: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise KindTableError(f"{kind}.{key}: true or false")
    return value


def _staff_input(kind: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and value in STAFF_INPUTS:
        return value
    raise KindTableError(f"{kind}.staff_input: one of {', '.join(STAFF_INPUTS)}")


def _names(kind: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise KindTableError(f"{kind}.{key}: a list of field names")
    return tuple(value)


def parse_kinds(data: Mapping[str, Any]) -> Mapping[RequestKind, KindSpec]:
    """Builds the table from parsed TOML; every classified kind must be there exactly once.

    ``unclassified`` must not be: its clock is its likely kinds', never a row of its own.
    """
    if RequestKind.UNCLASSIFIED.value in data:
        raise KindTableError(
            "'unclassified' takes no row: it runs on the shortest clock of its likely kinds"
        )
    known = {k.value for k in CLASSIFIED_KINDS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise KindTableError(f"unknown kind {unknown[0]!r}")
    missing = sorted(known - set(data))
    if missing:
        raise KindTableError(f"kind {missing[0]!r} is missing from the table")
    table: dict[RequestKind, KindSpec] = {}
    allowed = {"law", "policy", "starts", "required", "one_of", "law_ref", "policy_ref"}
    allowed |= {"questions", "evidence", "staff_input", "four_eyes", "preview", "at_once"}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise KindTableError(f"{name}: a table of settings")
        extra = sorted(set(entry) - allowed)
        if extra:
            raise KindTableError(f"{name}: unknown key {extra[0]!r}")
        law = _clock(name, "law", entry.get("law"))
        policy = _clock(name, "policy", entry.get("policy"))
        if law is None and policy is None:
            raise KindTableError(f"{name}: needs a law or a policy clock")
        try:
            starts = ClockStart(entry.get("starts", "received"))
        except ValueError:
            raise KindTableError(f'{name}.starts: "received" or "confirmation"') from None
        groups = entry.get("one_of", [])
        if not isinstance(groups, list):
            raise KindTableError(f"{name}.one_of: a list of lists of field names")
        at_once = _flag(name, "at_once", entry.get("at_once", False))
        if at_once and (entry.get("four_eyes") or entry.get("staff_input")):
            raise KindTableError(f"{name}.at_once: work done at once has no approver, no input")
        table[RequestKind(name)] = KindSpec(
            kind=RequestKind(name),
            law=law,
            policy=policy,
            starts=starts,
            required_fields=_names(name, "required", entry.get("required", [])),
            one_of_fields=tuple(_names(name, "one_of", g) for g in groups),
            law_ref=str(entry.get("law_ref", "")),
            policy_ref=str(entry.get("policy_ref", "")),
            questions=_questions(name, entry.get("questions", [])),
            evidence=_flag(name, "evidence", entry.get("evidence", False)),
            staff_input=_staff_input(name, entry.get("staff_input")),
            four_eyes=_flag(name, "four_eyes", entry.get("four_eyes", False)),
            preview=_flag(name, "preview", entry.get("preview", False)),
            at_once=at_once,
        )
    return MappingProxyType({kind: table[kind] for kind in CLASSIFIED_KINDS})


def load_default_kinds() -> Mapping[RequestKind, KindSpec]:
    text = resources.files("workflows").joinpath("kinds.toml").read_text(encoding="utf-8")
    return parse_kinds(tomllib.loads(text))


def four_eyes_kinds(kinds: Mapping[RequestKind, KindSpec]) -> frozenset[str]:
    """The kinds two different staff members must approve, as the table says."""
    return frozenset(kind.value for kind, spec in kinds.items() if spec.four_eyes)


DEFAULT_KINDS: Mapping[RequestKind, KindSpec] = load_default_kinds()
