"""What staff do on a request's card, from taking it to completing it, and the other ways it closes.

Staff take a request, reject it or ask for more (which is also how they say
that the documents are not enough: the clock of a correction then runs from the
new documents' arrival, :mod:`workflows.requests.documents`), complete it once
approved (approving is :mod:`workflows.requests.approvals`), and set its kind.
The person may cancel their own request; the scheduler expires one never
verified.

A change of kind counts the new kind's clock again from the receipt (see
:func:`~workflows.requests.classification.clock_for_kind` for kinds whose clock
starts on confirmation), the change is an audit event naming both kinds and
the staff member, the card is refreshed and the person is told the kind and
the deadline in their language. The scheduler plans the request again (any
change of the row sets its next notice instant back, :mod:`workflows.deadlines.notice_plan`)
and keys the new clock's notices by the change, so reminders already sent for
the old deadline do not stand in for the new one's. Approvals given before a
change count for nothing after it: four eyes approve what the request is now,
not what it was (:func:`~workflows.requests.records.since_last_kind_change`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from workflows.errors import AnswerNeeded, IllegalTransition, KindUndecided, NotAllowed
from workflows.kinds import RequestKind
from workflows.persistence.tables import DataSubject, Message, Request
from workflows.requests.at_once import AtOnce
from workflows.requests.classification import clock_for_kind
from workflows.requests.records import KIND_CHANGED, Evidence, Records
from workflows.requests.states import CLOSED, Action, Status, next_status
from workflows.snapshots import Actor, ActorKind, RequestView

# The person's notice that their complaint was considered, with staff's answer.
COMPLAINT_ANSWERED = "complaint_answered"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _ensure_classified(request: Request) -> None:
    if request.kind == RequestKind.UNCLASSIFIED.value:
        raise KindUndecided(request.reference)


class StaffActions(Records):
    """The request service's use cases of moving a request on (a mixin)."""

    async def take(self, reference: str, staff: Actor) -> RequestView:
        """A staff member takes the request (or takes it over)."""
        async with self._unit() as session:
            request = await self._load(session, reference)
            self._check_staff(staff)
            event = await self._move(session, request, Action.TAKE, staff, {})
            request.assignee_id, request.assignee_name = staff.staff_id, staff.name
            await self._to_staff(session, request, event, "staff_card")
            if Status(event.from_status or "") is Status.VERIFIED:
                subject = await session.get_one(DataSubject, request.subject_id)
                await self._to_subject(session, request, subject, event, "request_taken")
            return await self._view(session, request)

    async def reject(self, reference: str, staff: Actor, reason: str) -> RequestView:
        """Staff refuse the request with a reason the person receives."""
        if not reason.strip():
            raise ValueError("a rejection needs a reason")
        async with self._unit() as session:
            request = await self._load(session, reference)
            self._check_staff(staff)
            event = await self._move(session, request, Action.REJECT, staff, {})
            await self._outbound_text(session, request, staff.channel, reason)
            subject = await session.get_one(DataSubject, request.subject_id)
            params = {**self._params(request), "reason": reason}
            await self._to_subject(session, request, subject, event, "request_rejected", params)
            await self._to_staff(session, request, event, "staff_card")
            return await self._view(session, request)

    async def ask_info(self, reference: str, staff: Actor, question: str) -> RequestView:
        """Staff ask the person for more information; the clock keeps running.

        For a kind whose clock waits for documents, files sent in answer start
        it again from their arrival (:mod:`workflows.requests.documents`).
        """
        if not question.strip():
            raise ValueError("a question needs words")
        async with self._unit() as session:
            request = await self._load(session, reference)
            self._check_staff(staff)
            event = await self._move(session, request, Action.ASK_INFO, staff, {})
            if request.assignee_id is None:
                request.assignee_id, request.assignee_name = staff.staff_id, staff.name
            await self._outbound_text(session, request, staff.channel, question)
            subject = await session.get_one(DataSubject, request.subject_id)
            params = {**self._params(request), "question": question}
            await self._to_subject(session, request, subject, event, "info_requested", params)
            await self._to_staff(session, request, event, "staff_card")
            return await self._view(session, request)

    async def complete(
        self,
        reference: str,
        staff: Actor,
        note: str | None = None,
        *,
        template: str = "request_completed",
        params: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
        documents: Sequence[Evidence] = (),
        answer: str | None = None,
    ) -> RequestView:
        """Staff close an approved request as done; the person is told.

        The fulfilment passes what it did: the notice to send (``template`` with
        ``params``), what the audit event records (``details``: field names,
        never values) and the files to send with the notice (``documents``).
        A complaint is closed only with staff's ``answer`` (:class:`AnswerNeeded`):
        kept with the request among staff's words, and sent as the notice
        ``complaint_answered``.
        """
        async with self._unit() as session:
            request = await self._load(session, reference)
            self._check_staff_or_desk(request, staff)
            _ensure_classified(request)
            recorded = dict(details or {})
            answer = (answer or "").strip() or None
            if request.kind == RequestKind.COMPLAINT.value:
                next_status(Status(request.status), Action.COMPLETE)  # a closed one: not allowed
                if answer is None:
                    raise AnswerNeeded(request.reference)
                template, recorded["answered"] = COMPLAINT_ANSWERED, True
            event = await self._move(session, request, Action.COMPLETE, staff, recorded)
            subject = await session.get_one(DataSubject, request.subject_id)
            notice = {**self._params(request), "note": note or "", **(params or {})}
            if answer is not None:
                await self._outbound_text(session, request, staff.channel, answer)
                notice["answer"] = answer
            if documents:
                message = Message(
                    request_id=request.id,
                    direction="out",
                    channel=request.channel,
                    body_enc=None,
                    created_at=self._clock.now(),
                )
                session.add(message)
                await session.flush()
                rows = [await self._document(session, request, message, item) for item in documents]
                notice["documents"] = [row.id for row in rows]
            await self._to_subject(session, request, subject, event, template, notice)
            await self._to_staff(session, request, event, "staff_card")
            return await self._view(session, request)

    async def cancel(self, reference: str, actor: Actor) -> RequestView:
        """The person withdraws their own request."""
        async with self._unit() as session:
            request = await self._load(session, reference)
            subject = await session.get_one(DataSubject, request.subject_id)
            if actor.kind is not ActorKind.PERSON:
                raise NotAllowed("only the person who asked can cancel a request")
            self._check_owner(actor, subject)
            was_verified = request.verified_at is not None
            event = await self._move(session, request, Action.CANCEL, actor, {})
            await self._to_subject(session, request, subject, event, "request_cancelled")
            if was_verified:
                await self._to_staff(session, request, event, "staff_card")
            return await self._view(session, request)

    async def expire(self, reference: str) -> RequestView:
        """Close a request that was never verified; the person is told how to file again."""
        async with self._unit() as session:
            request = await self._load(session, reference)
            event = await self._move(session, request, Action.EXPIRE, Actor.system(), {})
            subject = await session.get_one(DataSubject, request.subject_id)
            await self._to_subject(session, request, subject, event, "request_expired")
            return await self._view(session, request)


class KindChanges(AtOnce):
    """The request service's staff use case of setting a request's kind (a mixin)."""

    async def change_kind(
        self, reference: str, staff: Actor, kind: RequestKind | str
    ) -> RequestView:
        """Staff set the kind of an open request; the deadline is recomputed and the person told.

        Allowed while the request is open and not yet approved (the work of an
        approved request follows its kind). ``unclassified`` cannot be chosen,
        nor the kind the request already has (:class:`NotAllowed`). A verified
        request made a kind done at once (leaving mailings) is done now.
        """
        new = RequestKind(kind)
        if new is RequestKind.UNCLASSIFIED:
            raise NotAllowed("a request cannot be made unclassified: pick one of the kinds")
        async with self._unit() as session:
            request = await self._load(session, reference)
            self._check_staff(staff)
            status = Status(request.status)
            if status in CLOSED or status is Status.APPROVED:
                raise IllegalTransition(request.status, "change the kind of")
            old = RequestKind(request.kind)
            if new is old:
                raise NotAllowed(f"the request is of the kind {new.value} already")
            now = self._clock.now()
            due_before = request.due_at
            request.clock_started_at, request.due_at = clock_for_kind(
                self._kinds[new], request.received_at, request.clock_started_at, self._calendar
            )
            request.kind = new.value
            request.kind_changed_at = now
            request.kind_changes = (request.kind_changes or 0) + 1
            request.approved_work_enc = None  # approvals of the old kind agreed to nothing now
            request.updated_at = now
            event = await self._audit(
                session,
                request,
                staff,
                KIND_CHANGED,
                request.status,
                None,
                {
                    "from": old.value,
                    "to": new.value,
                    "due_at_before": _iso(due_before),
                    "due_at": _iso(request.due_at),
                },
            )
            await self._to_staff(session, request, event, "staff_card")
            subject = await session.get_one(DataSubject, request.subject_id)
            await self._to_subject(session, request, subject, event, "kind_changed")
            view = await self._view(session, request)
        return await self._then_at_once(view)
