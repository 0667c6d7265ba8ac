"""An unclassified request's clock: the shortest of its likely kinds', each from receipt."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from workflows.deadlines.calendar import WorkingCalendar
from workflows.kinds import CLASSIFIED_KINDS, DEFAULT_KINDS, ClockSpec, DayUnit, RequestKind
from workflows.requests.classification import (
    clock_for_kind,
    likely_kinds,
    opening_clock,
    shortest_clock,
)

CALENDAR = WorkingCalendar()
# Tuesday 24 November 2026, 11:00 in Almaty.
RECEIVED = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
K = RequestKind


def due(candidates: tuple[RequestKind, ...]) -> date:
    return CALENDAR.local_date(shortest_clock(candidates, RECEIVED, DEFAULT_KINDS, CALENDAR).due_at)


def test_access_or_complaint_runs_on_access_three_working_days() -> None:
    running = shortest_clock((K.COMPLAINT, K.ACCESS), RECEIVED, DEFAULT_KINDS, CALENDAR)

    assert running.kind is K.ACCESS
    assert running.clock == ClockSpec(3, DayUnit.WORKING)
    assert CALENDAR.local_date(running.due_at) == date(2026, 11, 27)
    assert running.due_at == DEFAULT_KINDS[K.ACCESS].due_at(RECEIVED, CALENDAR)


def test_a_kind_whose_clock_starts_on_confirmation_counts_from_receipt_here() -> None:
    # A correction's one working day runs from the documents; unclassified, from receipt.
    running = shortest_clock((K.COMPLAINT, K.RECTIFY), RECEIVED, DEFAULT_KINDS, CALENDAR)

    assert running.kind is K.RECTIFY
    assert CALENDAR.local_date(running.due_at) == date(2026, 11, 25)


def test_no_candidates_means_every_kind_so_the_shortest_of_all() -> None:
    assert likely_kinds(K.UNCLASSIFIED) == CLASSIFIED_KINDS
    everything = min(
        spec.running_clock(RECEIVED, CALENDAR).deadline(RECEIVED, CALENDAR)
        for spec in DEFAULT_KINDS.values()
    )
    assert CALENDAR.local_date(everything) == date(2026, 11, 25)  # one working day

    assert due(()) == date(2026, 11, 25)


def test_of_two_ending_on_the_same_day_the_first_in_the_table_is_named() -> None:
    running = shortest_clock((K.BLOCK, K.RECTIFY), RECEIVED, DEFAULT_KINDS, CALENDAR)

    assert running.kind is K.RECTIFY
    assert running.due_at == DEFAULT_KINDS[K.BLOCK].due_at(RECEIVED, CALENDAR)


def test_the_likely_kinds_are_kept_once_each_in_the_tables_order() -> None:
    assert likely_kinds(K.UNCLASSIFIED, ["complaint", K.ACCESS, "access"]) == (
        K.ACCESS,
        K.COMPLAINT,
    )


@pytest.mark.parametrize(
    ("kind", "candidates", "words"),
    [
        (K.ACCESS, (K.COMPLAINT,), "only an unclassified request"),
        (K.UNCLASSIFIED, (K.UNCLASSIFIED,), "not a likely kind"),
        (K.UNCLASSIFIED, ("gossip",), "gossip"),
    ],
)
def test_nonsense_candidates_are_refused(
    kind: RequestKind, candidates: tuple[RequestKind | str, ...], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        likely_kinds(kind, candidates)


def test_opening_clocks() -> None:
    assert opening_clock(K.ACCESS, (), RECEIVED, DEFAULT_KINDS, CALENDAR) == (
        RECEIVED,
        DEFAULT_KINDS[K.ACCESS].due_at(RECEIVED, CALENDAR),
    )
    assert opening_clock(K.RECTIFY, (), RECEIVED, DEFAULT_KINDS, CALENDAR) == (None, None)
    started, due_at = opening_clock(
        K.UNCLASSIFIED, (K.COMPLAINT,), RECEIVED, DEFAULT_KINDS, CALENDAR
    )
    assert (started, due_at) == (RECEIVED, DEFAULT_KINDS[K.COMPLAINT].due_at(RECEIVED, CALENDAR))


def test_a_new_kind_counts_from_receipt_or_keeps_a_running_confirmation_clock() -> None:
    confirmed = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    access, rectify = DEFAULT_KINDS[K.ACCESS], DEFAULT_KINDS[K.DESTROY_UNLAWFUL]

    # A kind whose clock starts on receipt: from receipt, whatever ran before.
    assert clock_for_kind(access, RECEIVED, confirmed, CALENDAR) == (
        RECEIVED,
        access.due_at(RECEIVED, CALENDAR),
    )
    # A confirmation kind: the running clock's start is kept ...
    assert clock_for_kind(rectify, RECEIVED, confirmed, CALENDAR) == (
        confirmed,
        rectify.due_at(confirmed, CALENDAR),
    )
    # ... and with none running it waits for the documents.
    assert clock_for_kind(rectify, RECEIVED, None, CALENDAR) == (None, None)
