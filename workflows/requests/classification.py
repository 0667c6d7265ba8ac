"""Which clock a request runs on: its kind's, or, while unclassified, its likely kinds' shortest.

A request whose kind the desk cannot tell opens as ``unclassified`` with the
kinds it most likely is (none given: every kind). Until staff pick one, the
clock that runs is the one that ends first among those kinds' clocks, each
counted from receipt, a kind whose clock normally starts on confirmation too:
nobody has confirmed anything yet, and whichever kind it turns out to be, its
deadline cannot have been missed. When staff set the kind,
:func:`clock_for_kind` says where the new kind's clock stands.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from workflows.deadlines.calendar import WorkingCalendar
from workflows.kinds import CLASSIFIED_KINDS, ClockSpec, ClockStart, KindSpec, RequestKind


@dataclass(frozen=True)
class RunningClock:
    """The clock an unclassified request runs on: whose it is, and when it runs out."""

    kind: RequestKind  # the likely kind whose deadline comes first
    clock: ClockSpec
    due_at: datetime


def likely_kinds(
    kind: RequestKind, candidates: Iterable[RequestKind | str] = ()
) -> tuple[RequestKind, ...]:
    """The likely kinds to keep with a new request of ``kind``, each once, in the table's order.

    Only an unclassified request has them; with none given it may be any kind.
    Raises ``ValueError`` for candidates of a classified request, an unknown
    kind, or ``unclassified`` among the candidates.
    """
    given = {RequestKind(candidate) for candidate in candidates}
    if kind is not RequestKind.UNCLASSIFIED:
        if given:
            raise ValueError("only an unclassified request has likely kinds")
        return ()
    if RequestKind.UNCLASSIFIED in given:
        raise ValueError("'unclassified' is not a likely kind")
    return tuple(k for k in CLASSIFIED_KINDS if k in given) or CLASSIFIED_KINDS


def shortest_clock(
    candidates: Iterable[RequestKind | str],
    received_at: datetime,
    kinds: Mapping[RequestKind, KindSpec],
    calendar: WorkingCalendar,
) -> RunningClock:
    """The clock of the likely kinds that runs out first, each counted from ``received_at``.

    No candidates: every kind's. Of two ending on the same day, the first in
    the table's order is named.
    """
    shortest: RunningClock | None = None
    for kind in likely_kinds(RequestKind.UNCLASSIFIED, candidates):
        clock = kinds[kind].running_clock(received_at, calendar)
        due = clock.deadline(received_at, calendar)
        if shortest is None or due < shortest.due_at:
            shortest = RunningClock(kind, clock, due)
    assert shortest is not None  # likely_kinds is never empty
    return shortest


def opening_clock(
    kind: RequestKind,
    candidates: Iterable[RequestKind | str],
    received_at: datetime,
    kinds: Mapping[RequestKind, KindSpec],
    calendar: WorkingCalendar,
    *,
    documents: bool = False,
) -> tuple[datetime | None, datetime | None]:
    """Where a new request's clock stands: (started at, due at).

    A kind whose clock starts on confirmation starts it with the request when
    the request brings its documents (``documents``: files sent in the dialog,
    attachments of the letter, a letter by post with what it encloses); without
    them both are ``None`` until the documents arrive
    (:meth:`~workflows.requests.documents.DocumentClock._documents_arrived`)."""
    if kind is RequestKind.UNCLASSIFIED:
        return received_at, shortest_clock(candidates, received_at, kinds, calendar).due_at
    spec = kinds[kind]
    if spec.starts is ClockStart.RECEIVED or documents:
        return received_at, spec.due_at(received_at, calendar)
    return None, None


class OpeningClocks:
    """:func:`opening_clock` for a batch of new requests, each clock worked out once.

    A batch's requests come at one moment in a few kinds: fifty letters need
    a handful of deadlines, not fifty walks through the calendar.
    """

    def __init__(self, kinds: Mapping[RequestKind, KindSpec], calendar: WorkingCalendar) -> None:
        self._kinds = kinds
        self._calendar = calendar
        self._known: dict[tuple[object, ...], tuple[datetime | None, datetime | None]] = {}

    def of(
        self,
        kind: RequestKind,
        candidates: tuple[RequestKind, ...],
        received_at: datetime,
        *,
        documents: bool,
    ) -> tuple[datetime | None, datetime | None]:
        """:func:`opening_clock` of a request of the batch."""
        key = (kind, candidates, received_at, documents)
        if key not in self._known:
            self._known[key] = opening_clock(
                kind, candidates, received_at, self._kinds, self._calendar, documents=documents
            )
        return self._known[key]


def clock_for_kind(
    spec: KindSpec,
    received_at: datetime,
    clock_started_at: datetime | None,
    calendar: WorkingCalendar,
) -> tuple[datetime | None, datetime | None]:
    """Where the clock stands once staff set a request's kind to ``spec``'s: (started at, due at).

    A kind whose clock starts on receipt counts from the receipt. A kind whose
    clock starts on confirmation keeps the start of a clock that already runs
    (the receipt, for a request that was unclassified or of a receipt kind; the
    documents' arrival, for one of another confirmation kind), so a deadline the
    person has been given never disappears; with no clock running it waits for
    the documents to arrive, as a new request of that kind would.
    """
    if spec.starts is ClockStart.RECEIVED:
        return received_at, spec.due_at(received_at, calendar)
    if clock_started_at is None:
        return None, None
    return clock_started_at, spec.due_at(clock_started_at, calendar)


def running_clock(
    kind: RequestKind,
    candidates: Iterable[RequestKind | str],
    started_at: datetime,
    kinds: Mapping[RequestKind, KindSpec],
    calendar: WorkingCalendar,
) -> ClockSpec:
    """The clock a request of ``kind`` runs on (for the days left: working or calendar)."""
    if kind is RequestKind.UNCLASSIFIED:
        return shortest_clock(candidates, started_at, kinds, calendar).clock
    return kinds[kind].running_clock(started_at, calendar)
