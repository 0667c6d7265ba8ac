"""When the documents arrive, the clock of a kind that waits for them starts: no button.

The law gives one working day from the *receipt* of the documents that confirm
a correction (Art. 25) or an unlawful processing (``starts = "confirmation"``
in ``kinds.toml``). The documents are the files the person sends: in the
Telegram dialog or attached to the letter that opens the request (the clock
then starts with the request, :func:`~workflows.requests.classification.opening_clock`),
or later, added to the request (:meth:`DocumentClock._documents_arrived`).

Staff say that the documents are not enough by asking for more information;
when new documents come in answer, the clock runs again from their arrival,
and the person and the staff card are told the new deadline. Files that come
while a clock runs and nobody asked for more leave it alone: a person's second
copy of a scan does not move the company's deadline.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from workflows.kinds import ClockStart, RequestKind
from workflows.persistence.tables import DataSubject, Request
from workflows.requests.records import Records
from workflows.requests.states import CLOSED, Status
from workflows.snapshots import Actor

CLOCK_STARTED = "clock_started"


class DocumentClock(Records):
    """The request service's step of starting a clock on the documents' arrival (a mixin)."""

    async def _documents_arrived(
        self,
        session: AsyncSession,
        request: Request,
        subject: DataSubject,
        actor: Actor,
        files: int,
        *,
        asked: bool,
    ) -> None:
        """``files`` documents were added to ``request`` now; ``asked``: staff had asked for more.

        Starts the kind's clock when it waits for documents, or again when staff
        had asked for more; the audit event says when, with how many files, and
        the deadlines before and after.
        """
        spec = self._kinds.get(RequestKind(request.kind))
        if spec is None or spec.starts is not ClockStart.CONFIRMATION or files == 0:
            return
        if Status(request.status) in CLOSED:
            return
        if request.clock_started_at is not None and not asked:
            return
        now = self._clock.now()
        before = request.due_at
        if request.clock_started_at is not None:
            # A new clock: its notices are owed afresh from now, under keys of their own
            # (the scheduler keys notices by these columns, as after a change of kind).
            request.kind_changes = (request.kind_changes or 0) + 1
            request.kind_changed_at = now
        request.clock_started_at = now
        request.due_at = spec.due_at(now, self._calendar)
        request.updated_at = now
        details = {
            "documents": files,
            "due_at_before": before.isoformat() if before is not None else None,
            "due_at": request.due_at.isoformat(),
        }
        event = await self._audit(
            session, request, actor, CLOCK_STARTED, request.status, None, details
        )
        await self._to_staff(session, request, event, "staff_card")
        if request.verified_at is not None:  # else the verification's notice says the date
            await self._to_subject(session, request, subject, event, CLOCK_STARTED)
