"""Staff set the kind of an open request: an unclassified one's, or one the desk got wrong.

The new kind's clock is counted again from the receipt (see
:func:`~workflows.requests.classification.clock_for_kind` for kinds whose clock
starts on confirmation), the change is an audit event naming both kinds and
the staff member, the card is refreshed and the person is told the kind and
the deadline in their language. The scheduler plans the request again (any
change of the row sets its next notice instant back, :mod:`workflows.deadlines.notice_plan`)
and keys the new clock's notices by the change, so reminders already sent for
the old deadline do not stand in for the new one's.

Approvals given before a change count for nothing after it: four eyes approve
what the request is now, not what it was (:func:`since_last_kind_change`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from workflows.clock import Clock
from workflows.deadlines.calendar import WorkingCalendar
from workflows.errors import IllegalTransition, NotAllowed
from workflows.kinds import KindSpec, RequestKind
from workflows.persistence.tables import AuditEvent, DataSubject, Request
from workflows.requests.classification import clock_for_kind
from workflows.requests.states import CLOSED, Status
from workflows.snapshots import Actor, RequestView

KIND_CHANGED = "kind_changed"


def since_last_kind_change(request_id: int) -> ColumnElement[bool]:
    """A condition on :class:`AuditEvent`: recorded after the request's last change of kind."""
    last = (
        select(func.coalesce(func.max(AuditEvent.id), 0))
        .where(AuditEvent.request_id == request_id, AuditEvent.action == KIND_CHANGED)
        .scalar_subquery()
    )
    return AuditEvent.id > last


class _Core(Protocol):
    """What of the request service a change of kind uses (it is a mixin of it)."""

    _kinds: Mapping[RequestKind, KindSpec]
    _calendar: WorkingCalendar
    _clock: Clock

    def _unit(self) -> Any: ...

    async def _load(self, session: AsyncSession, reference: str) -> Request: ...

    def _check_staff(self, staff: Actor) -> None: ...

    async def _audit(
        self,
        session: AsyncSession,
        request: Request,
        actor: Actor,
        action: str,
        from_status: str | None,
        to_status: str | None,
        details: dict[str, Any],
    ) -> AuditEvent: ...

    async def _to_subject(
        self,
        session: AsyncSession,
        request: Request,
        subject: DataSubject,
        event: AuditEvent,
        template: str,
        params: dict[str, Any] | None = None,
    ) -> None: ...

    async def _to_staff(
        self, session: AsyncSession, request: Request, event: AuditEvent, template: str
    ) -> None: ...

    async def _view(
        self,
        session: AsyncSession,
        request: Request,
        *,
        with_events: bool = False,
        fresh: bool = False,
    ) -> RequestView: ...


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class KindChanges:
    """The request service's staff use-case of setting a request's kind (a mixin)."""

    async def change_kind(
        self: _Core, reference: str, staff: Actor, kind: RequestKind | str
    ) -> RequestView:
        """Staff set the kind of an open request; the deadline is recomputed and the person told.

        Allowed while the request is open and not yet approved (the work of an
        approved request follows its kind). ``unclassified`` cannot be chosen,
        nor the kind the request already has (:class:`NotAllowed`).
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
            return await self._view(session, request)
