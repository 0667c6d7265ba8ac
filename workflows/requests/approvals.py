"""Staff approve a request: what the approvals agree to is the work done, by others than its filer.

An approval names its work: the fields to destroy, or the corrected values. The
first approval keeps that work with the request, encrypted (the audit event
names the fields, never the values); a later approval must name the same work,
and the fulfilment of an approved request reads it back
(:meth:`Approvals.approved_work`). So nothing given afterwards, neither a second
approver's other fields nor words typed when Complete is pressed after a failed
attempt, can widen what four eyes agreed to. The work is dropped once the
request is closed.

Nobody approves a request they filed themselves: one whose data subject is
their own Telegram account, or whose subject shares an e-mail address or a
phone number that they proved in their own dialog with the bot
(:class:`~workflows.errors.OwnRequest`).

The one approval no staff member gives: the desk's own, of a verified request
of a kind done at once (``at_once``: leaving mailings), recorded as the
desk's (:data:`DESK`) with ``at_once`` in its audit event
(:meth:`Approvals.approve_at_once`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from workflows.errors import ApprovalMismatch, KindUndecided, NotAllowed, OwnRequest
from workflows.kinds import RequestKind
from workflows.persistence.tables import AuditEvent, DataSubject, Request
from workflows.requests.records import APPROVAL, DESK, Records, since_last_kind_change
from workflows.requests.states import Action, Status, next_status
from workflows.snapshots import Actor, RequestView


def work_names(work: Mapping[str, Any]) -> list[str]:
    """The field names an approval's work touches (what its audit event may say)."""
    return sorted(set(work.get("fields") or ()) | set(work.get("corrections") or {}))


def _canonical(work: Mapping[str, Any]) -> dict[str, Any]:
    """The work as two approvals must agree on it: the fields as a set, the values exactly."""
    return {**work, "fields": sorted(set(work.get("fields") or ()))}


def _mismatch(earlier: Mapping[str, Any]) -> ApprovalMismatch:
    names = ", ".join(work_names(earlier)) or "—"
    if "corrections" in earlier:
        return ApprovalMismatch(
            f"the first approval gave other corrections ({names}): give the same values, or reject"
        )
    return ApprovalMismatch(
        f"the first approval named other fields ({names}): approve the same fields, or reject"
    )


class Approvals(Records):
    """The request service's use-case of staff approving a request (a mixin)."""

    async def may_approve(self, reference: str, staff: Actor) -> None:
        """Raise what :meth:`approve` would refuse this staff member, before any work is asked.

        A channel asks this before it asks staff for fields or values, so nobody
        types corrections only to be told they may not approve.
        """
        async with self._sessions() as session:
            request = await self._load(session, reference)
            await self._may_approve(session, request, staff)

    async def _may_approve(self, session: AsyncSession, request: Request, staff: Actor) -> None:
        self._check_staff(staff)
        next_status(Status(request.status), Action.APPROVE)
        if request.kind == RequestKind.UNCLASSIFIED.value:
            raise KindUndecided(request.reference)
        await _refuse_own(session, request, staff)
        four_eyes = RequestKind(request.kind) in self._four_eyes
        if four_eyes and str(staff.staff_id) in await self._approvers(session, request):
            raise NotAllowed("a second, different staff member must approve this")

    async def approve_at_once(self, reference: str) -> RequestView:
        """The desk approves, itself, a verified request of a kind done at once.

        Refused (:class:`NotAllowed`) for any other kind, and for a request
        not verified or no longer waiting (taken, approved, closed): nobody's
        data is acted on for someone who has not proved who they are.
        """
        async with self._unit() as session:
            request = await self._load(session, reference)
            spec = self._kinds.get(RequestKind(request.kind))
            if spec is None or not spec.at_once:
                raise NotAllowed("only staff approve a request of this kind")
            if request.verified_at is None or request.status != Status.VERIFIED.value:
                raise NotAllowed("only a verified request waiting for staff is done at once")
            request.approved_work_enc = self._vault.encrypt_json({})
            event = await self._move(session, request, Action.APPROVE, DESK, {"at_once": True})
            await self._to_staff(session, request, event, "staff_card")
            return await self._view(session, request)

    async def approval_details(self, reference: str) -> list[dict[str, Any]]:
        """What each approval recorded so far (four eyes), oldest first."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            rows = await session.scalars(
                select(AuditEvent.details)
                .where(
                    AuditEvent.request_id == request.id,
                    AuditEvent.action == APPROVAL,
                    since_last_kind_change(request.id),
                )
                .order_by(AuditEvent.id)
            )
            return [dict(row or {}) for row in rows]

    async def approved_work(self, reference: str) -> dict[str, Any]:
        """The work the approvals of this request agreed to (``fields``, ``corrections``).

        Empty for kinds whose work follows from the kind alone. A request
        approved before the work was kept with it has the destroyed fields of
        its ``approve`` audit event.
        """
        async with self._sessions() as session:
            request = await self._load(session, reference)
            work = self._vault.decrypt_json(request.approved_work_enc)
            if work is not None:
                return dict(work)
            details = await session.scalar(
                select(AuditEvent.details)
                .where(AuditEvent.request_id == request.id, AuditEvent.action == "approve")
                .order_by(AuditEvent.id.desc())
                .limit(1)
            )
            fields = (details or {}).get("fields")
            return {"fields": list(fields)} if fields else {}

    async def approve(
        self,
        reference: str,
        staff: Actor,
        *,
        work: Mapping[str, Any] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> RequestView:
        """Staff approve the request, agreeing to ``work``; the fulfilment follows, then completion.

        A destructive kind (``four_eyes``) needs approvals from two different
        staff members: the first is recorded with its work and the request
        waits for the second, whose work must be the same
        (:class:`ApprovalMismatch`); the same person approving twice is
        refused, and so is anyone approving a request they filed themselves.
        The audit event records the names of the fields the work touches
        (and ``details``), never values.
        """
        agreed = dict(work or {})
        names = work_names(agreed)
        recorded: dict[str, Any] = {"fields": names} if names else {}
        recorded.update(details or {})
        async with self._unit() as session:
            request = await self._load(session, reference)
            await self._may_approve(session, request, staff)
            if RequestKind(request.kind) in self._four_eyes:
                given = await self._approvers(session, request)
                if given:
                    await _same_work(self, session, request, agreed)
                request.approved_work_enc = self._vault.encrypt_json(agreed)
                if len(given) + 1 < self._approvals_needed:
                    event = await self._audit(
                        session,
                        request,
                        staff,
                        APPROVAL,
                        request.status,
                        None,
                        {"given": len(given) + 1, "needed": self._approvals_needed, **recorded},
                    )
                    request.updated_at = self._clock.now()
                    await self._to_staff(session, request, event, "staff_card")
                    return await self._view(session, request)
                approved = {"approved_by": [*given.values(), staff.name], **recorded}
            else:
                request.approved_work_enc = self._vault.encrypt_json(agreed)
                approved = recorded
            event = await self._move(session, request, Action.APPROVE, staff, approved)
            if request.assignee_id is None:
                request.assignee_id, request.assignee_name = staff.staff_id, staff.name
            await self._to_staff(session, request, event, "staff_card")
            return await self._view(session, request)


async def _same_work(
    core: Records, session: AsyncSession, request: Request, agreed: Mapping[str, Any]
) -> None:
    """Refuse a later approval whose work is not what the first approval agreed to."""
    kept = core._vault.decrypt_json(request.approved_work_enc)
    if kept is not None:
        if _canonical(kept) != _canonical(agreed):
            raise _mismatch(kept)
        return
    # A first approval recorded before its work was kept: its audit event has the names.
    rows = await session.scalars(
        select(AuditEvent.details).where(
            AuditEvent.request_id == request.id,
            AuditEvent.action == APPROVAL,
            since_last_kind_change(request.id),
        )
    )
    names = next((sorted(row["fields"]) for row in rows if row and row.get("fields")), None)
    if names is not None and names != work_names(agreed):
        raise _mismatch({"fields": names})


async def _refuse_own(session: AsyncSession, request: Request, staff: Actor) -> None:
    """Refuse a staff member the approval of a request that is their own."""
    subject = await session.get_one(DataSubject, request.subject_id)
    if subject.telegram_user_id is not None and subject.telegram_user_id == staff.staff_id:
        raise OwnRequest("a staff member cannot approve a request they filed themselves")
    # The staff member as a person of the bot: the contacts they proved in their own dialog.
    own = await session.scalar(
        select(DataSubject).where(DataSubject.telegram_user_id == staff.staff_id)
    )
    if own is None:
        return
    shared_email = own.email_index is not None and own.email_index == subject.email_index
    shared_phone = own.phone_index is not None and own.phone_index == subject.phone_index
    if shared_email or shared_phone:
        raise OwnRequest("a staff member cannot approve a request filed with their own contacts")
