"""What every use case writes of a request and reads back: moves, events, messages, files, views.

:class:`Records` is the base of the request service's use cases (the mixins of
:class:`~workflows.requests.service.RequestService`): it names what the service
is made with and holds the steps they share, each taken inside the caller's
unit of work. A move is an audit event (:func:`workflows.privacy.audit.record_event`);
what it causes the person and the staff group to hear goes to the outbox in
the same transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.deadlines.calendar import WorkingCalendar
from workflows.errors import NotAllowed, RequestNotFound
from workflows.identity import normalize_email
from workflows.kinds import KindSpec, RequestKind
from workflows.outbox.queue import Audience, Channel, NewMessage, enqueue_many, subject_route
from workflows.persistence.tables import Attachment, AuditEvent, DataSubject, Message, Request
from workflows.privacy.audit import record_event
from workflows.privacy.vault import Vault
from workflows.requests.limits import Limits
from workflows.requests.states import CLOSED, Action, Status, next_status
from workflows.requests.unit_of_work import UnitOfWork
from workflows.snapshots import Actor, ActorKind, AuditView, RequestView

# The audit actions that approvals are counted by (see workflows.requests.approvals).
KIND_CHANGED = "kind_changed"
APPROVAL = "approval"

# The desk itself, the actor of the work it does at once without staff (``at_once`` kinds).
DESK = Actor(ActorKind.SYSTEM, "desk", name="desk")


def since_last_kind_change(request_id: int) -> ColumnElement[bool]:
    """A condition on :class:`AuditEvent`: recorded after the request's last change of kind."""
    last = (
        select(func.coalesce(func.max(AuditEvent.id), 0))
        .where(AuditEvent.request_id == request_id, AuditEvent.action == KIND_CHANGED)
        .scalar_subquery()
    )
    return AuditEvent.id > last


# Statements of most requests' reads, built once (building one anew costs more than
# running it: BENCHMARKS.md section 6, fifth session).
_BY_REFERENCE = select(Request).where(Request.reference == bindparam("reference"))
_EVENTS_OF_REQUEST = (
    select(AuditEvent)
    .where(AuditEvent.request_id == bindparam("request_id"))
    .order_by(AuditEvent.id)
)


@dataclass(frozen=True)
class Evidence:
    """A file a person sent with their request."""

    filename: str
    content_type: str
    data: bytes


class Records:
    """What the request service is made with, and the steps its use cases share."""

    limits: Limits
    _sessions: async_sessionmaker[AsyncSession]
    _vault: Vault
    _clock: Clock
    _calendar: WorkingCalendar
    _kinds: Mapping[RequestKind, KindSpec]
    _staff_user_ids: frozenset[int] | None
    _randbelow: Callable[[int], int]
    _four_eyes: frozenset[RequestKind]
    _approvals_needed: int

    # -- the unit of work and who may act in it -----------------------------

    def _unit(self) -> UnitOfWork:
        return UnitOfWork(self._sessions)

    async def _load(self, session: AsyncSession, reference: str) -> Request:
        request = await session.scalar(_BY_REFERENCE, {"reference": reference.strip().upper()})
        if request is None:
            raise RequestNotFound(reference)
        return request

    def _check_staff(self, staff: Actor) -> None:
        if staff.kind is not ActorKind.STAFF or staff.staff_id is None:
            raise NotAllowed("only staff can do this")
        if self._staff_user_ids is not None and staff.staff_id not in self._staff_user_ids:
            raise NotAllowed("this user is not on the staff list")

    def _check_staff_or_desk(self, request: Request, actor: Actor) -> None:
        """Staff, or the desk itself (:data:`DESK`) for a request of a kind done at once."""
        spec = self._kinds.get(RequestKind(request.kind))
        if actor == DESK and spec is not None and spec.at_once:
            return
        self._check_staff(actor)

    def _check_owner(
        self, actor: Actor, subject: DataSubject, *, allow_unknown_email: bool = False
    ) -> None:
        if actor.kind is not ActorKind.PERSON:
            return
        if actor.telegram_user_id is not None:
            if subject.telegram_user_id != actor.telegram_user_id:
                raise NotAllowed("this request belongs to someone else")
            return
        if actor.email is not None:
            index = self._vault.blind_index("email", normalize_email(actor.email))
            if subject.email_index == index:
                return
            if allow_unknown_email and subject.email_index is None:
                return
            raise NotAllowed("this request belongs to someone else")
        raise NotAllowed("the person is not identified")

    # -- moves and audit events ---------------------------------------------

    async def _move(
        self,
        session: AsyncSession,
        request: Request,
        action: Action,
        actor: Actor,
        details: dict[str, Any],
        to: Status | None = None,
    ) -> AuditEvent:
        current = Status(request.status)
        target = next_status(current, action)
        if to is not None:
            target = to
        now = self._clock.now()
        request.status = target.value
        request.updated_at = now
        if target in CLOSED:
            request.closed_at = now
            request.approved_work_enc = None  # done or never to be done: its values go
        return await self._audit(session, request, actor, action.value, current, target, details)

    async def _audit(
        self,
        session: AsyncSession,
        request: Request,
        actor: Actor,
        action: str,
        from_status: str | None,
        to_status: str | None,
        details: dict[str, Any],
    ) -> AuditEvent:
        event = self._event(session, request, actor, action, from_status, to_status, details)
        await session.flush()
        return event

    def _event(
        self,
        session: AsyncSession,
        request: Request,
        actor: Actor,
        action: str,
        from_status: str | None,
        to_status: str | None,
        details: dict[str, Any],
    ) -> AuditEvent:
        values = self._event_values(request, actor, action, from_status, to_status, details)
        return record_event(session, **values)

    def _event_values(
        self,
        request: Request,
        actor: Actor,
        action: str,
        from_status: str | None,
        to_status: str | None,
        details: dict[str, Any],
    ) -> dict[str, Any]:
        """An event's arguments of :func:`record_event` (or, many at once, ``record_events``)."""
        actor_id: str | None = None
        if actor.kind is ActorKind.STAFF:
            actor_id = str(actor.staff_id)
        elif actor.kind is ActorKind.PERSON:
            actor_id = f"subject:{request.subject_id}"
        return {
            "request_id": request.id,
            "reference": request.reference,
            "at": self._clock.now(),
            "actor": actor.kind.value,
            "actor_id": actor_id,
            "actor_name": actor.name,
            "channel": actor.channel,
            "action": action,
            "from_status": str(from_status) if from_status is not None else None,
            "to_status": str(to_status) if to_status is not None else None,
            "details": details,
        }

    async def _approvers(self, session: AsyncSession, request: Request) -> dict[str, str]:
        """Staff who have approved this request, as it is now (since its last change of kind)."""
        rows = await session.execute(
            select(AuditEvent.actor_id, AuditEvent.actor_name)
            .where(
                AuditEvent.request_id == request.id,
                AuditEvent.action == APPROVAL,
                since_last_kind_change(request.id),
            )
            .order_by(AuditEvent.id)
        )
        return {str(actor_id): str(name or actor_id) for actor_id, name in rows if actor_id}

    # -- messages and files -------------------------------------------------

    async def _inbound(
        self,
        session: AsyncSession,
        request: Request,
        channel: str,
        body: str | None,
        external_id: str | None,
    ) -> Message | None:
        if body is None and external_id is None:
            return None
        message = Message(
            request_id=request.id,
            direction="in",
            channel=channel,
            body_enc=self._vault.encrypt(body),
            external_id=external_id,
            created_at=self._clock.now(),
        )
        session.add(message)
        await session.flush()
        return message

    async def _outbound_text(
        self, session: AsyncSession, request: Request, channel: str, text: str
    ) -> None:
        """Keep staff's own words (a reason, a question) with the request."""
        session.add(
            Message(
                request_id=request.id,
                direction="staff",
                channel=channel,
                body_enc=self._vault.encrypt(text),
                created_at=self._clock.now(),
            )
        )

    async def _attach(
        self,
        session: AsyncSession,
        request: Request,
        message: Message | None,
        evidence: Sequence[Evidence],
    ) -> None:
        for item in evidence:
            session.add(self._file_row(request, message, item))

    async def _document(
        self, session: AsyncSession, request: Request, message: Message, item: Evidence
    ) -> Attachment:
        row = self._file_row(request, message, item)
        session.add(row)
        await session.flush()
        return row

    def _file_row(self, request: Request, message: Message | None, item: Evidence) -> Attachment:
        return Attachment(
            request_id=request.id,
            message_id=message.id if message is not None else None,
            filename_enc=self._vault.encrypt(item.filename),
            content_type=item.content_type[:200],
            size=len(item.data),
            sha256=hashlib.sha256(item.data).hexdigest(),
            data_enc=self._vault.encrypt_bytes(item.data),
            created_at=self._clock.now(),
        )

    # -- what the person and the staff group hear ---------------------------

    def _params(self, request: Request) -> dict[str, Any]:
        due = request.due_at
        return {
            "reference": request.reference,
            "kind": request.kind,
            "status": request.status,
            "due_date": self._calendar.local_date(due).isoformat() if due else None,
        }

    async def _to_subject(
        self,
        session: AsyncSession,
        request: Request,
        subject: DataSubject,
        event: AuditEvent,
        template: str,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Tell the person, on the channel they used (e-mail if Telegram refused us last time)."""
        message = await self._subject_message(session, request, subject, event, template, params)
        if message is not None:
            await enqueue_many(session, self._vault, self._clock.now(), [message])

    async def _subject_message(
        self,
        session: AsyncSession,
        request: Request,
        subject: DataSubject,
        event: AuditEvent,
        template: str,
        params: dict[str, Any] | None = None,
    ) -> NewMessage | None:
        """What :meth:`_to_subject` enqueues; ``None`` when the person cannot be reached.

        With no way at all to reach them, the message is not dropped in silence:
        the audit trail and the staff group say what could not be said.
        """
        route = subject_route(self._vault, request.channel, subject)
        if route is None:
            reason = "no way to reach the person"
            lost = await self._audit(
                session,
                request,
                Actor.system(),
                "delivery_failed",
                request.status,
                None,
                {"template": template, "audience": Audience.SUBJECT.value, "reason": reason},
            )
            extra = {"template": template, "reason": reason}
            await self._to_staff(session, request, lost, "staff_delivery_failed", extra)
            return None
        channel, address = route
        return NewMessage(
            key=f"{request.reference}/{event.id}/subject/{template}",
            channel=channel,
            audience=Audience.SUBJECT,
            template=template,
            language=request.language,
            params=params if params is not None else self._params(request),
            address=address,
            request_id=request.id,
        )

    async def _to_staff(
        self,
        session: AsyncSession,
        request: Request,
        event: AuditEvent,
        template: str,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Post to (or update the card in) the staff group."""
        message = NewMessage(
            key=f"{request.reference}/{event.id}/staff/{template}",
            channel=Channel.TELEGRAM,
            audience=Audience.STAFF_GROUP,
            template=template,
            language="en",
            params={**self._params(request), "action": event.action, **(extra or {})},
            request_id=request.id,
        )
        await enqueue_many(session, self._vault, self._clock.now(), [message])

    # -- the request as channels see it ---------------------------------------

    async def _view(
        self,
        session: AsyncSession,
        request: Request,
        *,
        with_events: bool = False,
        fresh: bool = False,
        subject: DataSubject | None = None,
    ) -> RequestView:
        """The request as channels see it; ``fresh``: made in this transaction (no approvals).

        ``subject``: the request's data subject, when the caller holds it already.
        """
        if subject is None or subject.id != request.subject_id:
            subject = await session.get_one(DataSubject, request.subject_id)
        fields = dict(self._vault.decrypt_json(request.fields_enc) or {})
        four_eyes = RequestKind(request.kind) in self._four_eyes and not fresh
        return RequestView(
            id=request.id,
            reference=request.reference,
            kind=request.kind,
            status=request.status,
            channel=request.channel,
            language=request.language,
            received_at=request.received_at,
            clock_started_at=request.clock_started_at,
            due_at=request.due_at,
            verified_at=request.verified_at,
            verified_by=request.verified_by,
            customer_matched=request.customer_id is not None,
            assignee_id=request.assignee_id,
            assignee_name=request.assignee_name,
            closed_at=request.closed_at,
            subject_id=request.subject_id,
            subject_telegram_user_id=subject.telegram_user_id,
            fields=fields,
            missing_fields=self._missing_fields(request.kind, fields),
            events=await _events(session, request) if with_events else (),
            approvals=tuple((await self._approvers(session, request)).values())
            if four_eyes
            else (),
            candidates=tuple(request.candidates or ()),
        )

    def _missing_fields(self, kind: str, fields: Mapping[str, Any]) -> tuple[str, ...]:
        """What the kind needs and the request lacks; an unclassified one needs nothing yet."""
        spec = self._kinds.get(RequestKind(kind))
        return tuple(spec.missing_fields(fields)) if spec is not None else ()


async def _events(session: AsyncSession, request: Request) -> tuple[AuditView, ...]:
    """The request's audit trail, oldest first."""
    rows = await session.scalars(_EVENTS_OF_REQUEST, {"request_id": request.id})
    return tuple(
        AuditView(
            id=e.id,
            at=e.at,
            actor=e.actor,
            actor_id=e.actor_id,
            actor_name=e.actor_name,
            channel=e.channel,
            action=e.action,
            from_status=e.from_status,
            to_status=e.to_status,
            details=dict(e.details or {}),
            prev_hash=e.prev_hash,
            hash=e.hash,
        )
        for e in rows
    )
