"""Fulfilment: approving a request does the work, not only closes a ticket.

:class:`Fulfilment` approves through the request service (which enforces four
eyes on destructive kinds), then does what the kind asks in the customer
directory (:class:`~workflows.directory.customer_directory.CustomerDirectory`:
the desk's SQL directory, or a company's CRM), then completes the request with
a notice to the person saying what was done, and an audit event naming the
fields touched — never their values. Work that fails after approval leaves
the request approved for a retry, and says so to staff (:meth:`Fulfilment.fulfil`).

A kind the desk does at once (``at_once``: leaving mailings) needs no staff:
:meth:`Fulfilment.at_once`, given to the request service by the composition
(``service.do_at_once``), approves it as the desk and fulfils it as soon as
the person is verified; the card shows it done.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from workflows.clock import Clock
from workflows.directory.customer_directory import ACCOUNT_FIELDS, CustomerDirectory, Flags
from workflows.directory.store import CustomerRecord
from workflows.errors import AnswerNeeded, DomainError
from workflows.fulfilment.access_report import AccessReport, build_access_report
from workflows.fulfilment.corrections import checked_corrections, field_names, parse_corrections
from workflows.fulfilment.failures import (
    FulfilmentError,
    FulfilmentFailed,
    error_origin,
    failure_reason,
)
from workflows.fulfilment.processing import ProcessingFacts
from workflows.i18n import DeskInfo
from workflows.kinds import RequestKind
from workflows.requests.holdings import DeskHoldings
from workflows.requests.queries import CardFacts
from workflows.requests.records import DESK, Evidence
from workflows.requests.service import RequestService
from workflows.requests.states import Status
from workflows.snapshots import Actor, RequestView

log = logging.getLogger(__name__)


class Fulfilment:
    """Approve, do the work in the directory, complete with a notice of what was done."""

    def __init__(
        self,
        service: RequestService,
        directory: CustomerDirectory,
        clock: Clock,
        *,
        timezone: str = "Asia/Almaty",
        info: DeskInfo | None = None,
        processing: ProcessingFacts | None = None,
    ) -> None:
        self._service = service
        self._directory = directory
        self._clock = clock
        self._timezone = timezone
        # The desk's name, addresses and authorised body, as both channels name them.
        self._info = info or DeskInfo()
        # The operator's recipients, transfers and retention (DSR_PROCESSING_FILE).
        self._processing = processing or ProcessingFacts()

    @property
    def directory(self) -> CustomerDirectory:
        return self._directory

    def _today(self) -> date:
        return self._clock.now().astimezone(ZoneInfo(self._timezone)).date()

    def parse_corrections(self, text: str) -> dict[str, str]:
        """:func:`~workflows.fulfilment.corrections.parse_corrections`, on the desk's date."""
        return parse_corrections(text, today=self._today())

    async def customer(self, view: RequestView) -> CustomerRecord | None:
        """The customer the request is about: the match made at verification, else contacts."""
        matched = await self._service.customer_of(view.reference)
        contacts = (
            {} if matched is not None else await self._service.subject_contacts(view.reference)
        )
        return await self._customer_from(matched, contacts)

    async def _customer_from(
        self, matched: str | None, contacts: Mapping[str, str]
    ) -> CustomerRecord | None:
        if matched is not None:
            return await self._directory.lookup(customer_id=matched)
        if not contacts.get("phone") and not contacts.get("email"):
            return None
        return await self._directory.lookup(
            phone=contacts.get("phone"), email=contacts.get("email")
        )

    async def preview(self, reference: str) -> str | None:
        """What staff see on the card before approving an access request."""
        return await self.preview_of(await self._service.card_facts(reference))

    async def preview_of(self, facts: CardFacts) -> str | None:
        """The preview from what the card has already read (no second read of the request)."""
        view = facts.view
        if view.kind != RequestKind.ACCESS.value:
            return None
        customer = await self._customer_from(facts.customer_id, facts.contacts)
        return (await self._report(view, customer, facts.holdings)).preview()

    async def _report(
        self, view: RequestView, customer: CustomerRecord | None, desk: DeskHoldings | None = None
    ) -> AccessReport:
        """The access report of ``view``: the customer list's data and the desk's own.

        ``desk``: what the desk holds, if read already (with the card's facts)."""
        return build_access_report(
            customer,
            reference=view.reference,
            language=view.language,
            now=self._clock.now(),
            timezone=self._timezone,
            desk=desk if desk is not None else await self._service.desk_holdings(view.reference),
            processing=self._processing,
            info=self._info,
        )

    async def approve(
        self,
        reference: str,
        staff: Actor,
        *,
        corrections: Mapping[str, str] | None = None,
        fields: Sequence[str] | None = None,
        answer: str | None = None,
    ) -> RequestView:
        """Approve; once the request is approved (four eyes permitting), fulfil and complete.

        The corrections of a ``rectify``, the fields of a ``destroy_unlawful``
        and the answer to a ``complaint`` are the work this approval agrees to;
        the request service keeps them (encrypted), holds a second approver to
        the same, and :meth:`fulfil` does them.
        """
        view = await self._service.get(reference)
        kind = RequestKind(view.kind)
        work: dict[str, Any] = {}
        if kind is RequestKind.COMPLAINT:
            if not (answer or "").strip():
                raise AnswerNeeded(reference)
            work["answer"] = (answer or "").strip()
        if kind is RequestKind.RECTIFY:
            if not corrections:
                raise FulfilmentError("a correction needs the corrected values")
            # Checked before the approval, so a refused value leaves the request as it was.
            corrections = checked_corrections(corrections, today=self._today())
            if await self.customer(view) is None:
                raise FulfilmentError(
                    "no customer record matches this person: there is nothing to correct;"
                    " ask for information or reject with the reason"
                )
            work["corrections"] = dict(corrections)
        if kind is RequestKind.DESTROY_UNLAWFUL:
            if not fields:
                raise FulfilmentError("a destruction needs the fields to destroy")
            work["fields"] = list(dict.fromkeys(fields))  # as named; compared as a set
        view = await self._service.approve(reference, staff, work=work)
        if view.status != Status.APPROVED.value:
            return view  # waiting for a second approval
        return await self.fulfil(view, staff)

    async def at_once(self, view: RequestView) -> RequestView:
        """The desk approves and fulfils, itself, a verified request of a kind done at once.

        The request service refuses (:class:`~workflows.errors.NotAllowed`)
        anything but a verified request of an ``at_once`` kind waiting for
        staff. A failure of the work is :meth:`fulfil`'s: the request stays
        approved, staff are alerted, and Complete on its card tries again.
        """
        approved = await self._service.approve_at_once(view.reference)
        return await self.fulfil(approved, DESK)

    def act_at_once(self) -> None:
        """Have the request service hand this fulfilment each verified ``at_once`` request."""
        self._service.do_at_once(self.at_once)

    async def fulfil(
        self, view: RequestView, staff: Actor, *, answer: str | None = None
    ) -> RequestView:
        """Do the work the approvals agreed to, then complete the request.

        Also what Complete does for an approved request whose work failed part
        way (a directory that did not answer): the same work again, nothing more.
        A complaint approved without its answer (before answers were asked for)
        takes ``answer`` now; one approved with its answer keeps that one.
        Whatever fails on the way (the directory, the report, the completion)
        leaves the request approved, so Complete on its card tries again; it
        is an audit event and an alert in the staff group naming the request
        and the reason, and :class:`FulfilmentFailed` carries the reason to
        the caller. A request no longer approved (completed meanwhile by
        another staff member) raises the original error and alarms nobody.
        """
        work = await self._service.approved_work(view.reference)
        corrections: Mapping[str, str] = work.get("corrections") or {}
        fields: Sequence[str] = work.get("fields") or ()
        if RequestKind(view.kind) is RequestKind.COMPLAINT:
            answer = str(work.get("answer") or answer or "").strip()
            if not answer:
                raise AnswerNeeded(view.reference)  # nothing was tried: no failure to report
        try:
            return await self._work(
                view, staff, corrections=corrections, fields=fields, answer=answer
            )
        except Exception as exc:
            reason = failure_reason(exc)
            # The audit log is kept for good: a foreign error's message, which may
            # quote a value, stays out of it; our own reasons name no personal data.
            details = {"error": type(exc).__name__}
            if isinstance(exc, DomainError):
                details["reason"] = reason
            if not await self._service.fulfilment_failed(
                view.reference, staff, reason=reason, details=details
            ):
                raise
            log.error(
                "the work of %s failed; it stays approved and staff are told: %s",
                view.reference,
                error_origin(exc),
                extra={"reference": view.reference},
            )
            raise FulfilmentFailed(reason) from exc

    async def _work(
        self,
        view: RequestView,
        staff: Actor,
        *,
        corrections: Mapping[str, str] | None,
        fields: Sequence[str] | None,
        answer: str | None = None,
    ) -> RequestView:
        kind = RequestKind(view.kind)
        customer = await self.customer(view)
        found = customer is not None
        details: dict[str, Any] = {"customer_found": found}
        params: dict[str, Any] = {}
        documents: Sequence[Evidence] = ()
        template = "request_completed"
        if kind is RequestKind.ACCESS:
            report = await self._report(view, customer)
            template, params = "access_report", {"summary": report.summary()}
            documents = (
                Evidence(f"{view.reference}-access.pdf", "application/pdf", report.as_pdf()),
                Evidence(f"{view.reference}-access.json", "application/json", report.as_json()),
            )
        elif kind is RequestKind.DELETE_ACCOUNT:
            erased = await self._directory.erase(customer.id, ACCOUNT_FIELDS) if customer else []
            template, details["erased_fields"] = "account_deleted", erased
        elif kind is RequestKind.WITHDRAW_CONSENT:
            if customer is not None:
                scope = str(view.fields.get("data_concerned") or "")
                await self._directory.set_flags(
                    customer.id,
                    Flags(marketing_stopped=True, processing_stopped=True, processing_scope=scope),
                )
            template, details["flags"] = "consent_withdrawn", ["marketing", "processing"]
        elif kind is RequestKind.UNSUBSCRIBE:
            if customer is not None:
                await self._directory.set_flags(customer.id, Flags(marketing_stopped=True))
            template, details["flags"] = "unsubscribed", ["marketing"]
        elif kind is RequestKind.BLOCK:
            if customer is not None:
                await self._directory.set_flags(customer.id, Flags(blocked=True))
            template, details["flags"] = "processing_blocked", ["blocked"]
        elif kind is RequestKind.RECTIFY:
            if customer is None:
                raise FulfilmentError("no customer record to correct")
            if not corrections:
                raise FulfilmentError("the approved corrections are not recorded")
            checked = checked_corrections(corrections, today=self._today())
            changed = await self._directory.update(customer.id, checked)
            template, details["changed_fields"] = "data_corrected", changed
            params["fields"] = field_names(view.language, changed)
        elif kind is RequestKind.DESTROY_UNLAWFUL:
            if not fields:
                raise FulfilmentError("the approved fields to destroy are not recorded")
            erased = await self._directory.erase(customer.id, list(fields)) if customer else []
            template, details["erased_fields"] = "data_destroyed", erased
            params["fields"] = field_names(view.language, erased)
        if not found and kind not in (RequestKind.ACCESS, RequestKind.COMPLAINT):
            template = "done_no_record"
        return await self._service.complete(
            view.reference,
            staff,
            template=template,
            params=params,
            details=details,
            documents=documents,
            answer=answer if kind is RequestKind.COMPLAINT else None,
        )
