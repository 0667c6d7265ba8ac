"""Fulfilment: approving a request does the work, not only closes a ticket.

The customer directory is an interface (:class:`CustomerDirectory`): the SQL
directory of this desk is the default, and a company may plug in its own CRM
with the same five methods. :class:`Fulfilment` approves through the request
service (which enforces four eyes on destructive kinds), then does what the
kind asks in the directory, then completes the request with a notice to the
person saying what was done, and an audit event naming the fields touched —
never their values. Work that fails after approval leaves the request
approved for a retry, and says so to staff (:meth:`Fulfilment.fulfil`).
"""

from __future__ import annotations

import io
import json
import logging
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.csv_export import SafeWriter
from workflows.directory.field_rules import InvalidField, account_value
from workflows.directory.store import CustomerRecord, customer_record
from workflows.errors import DomainError
from workflows.fulfilment.access_report import build_access_report
from workflows.i18n import catalogue
from workflows.identity import normalize_email, normalize_phone, validate_iin
from workflows.kinds import RequestKind
from workflows.persistence.tables import Customer
from workflows.privacy.masking import mask_text
from workflows.privacy.vault import Vault
from workflows.requests.queries import CardFacts
from workflows.requests.records import Evidence
from workflows.requests.service import RequestService
from workflows.requests.states import Status
from workflows.snapshots import Actor, RequestView

log = logging.getLogger(__name__)

# What deleting an account erases (policy, section 2); purchases are kept.
ACCOUNT_FIELDS = (
    "full_name",
    "iin",
    "phone",
    "email",
    "gender",
    "birth_date",
    "language",
)
# What staff may correct or destroy by name.
DIRECTORY_FIELDS = frozenset(ACCOUNT_FIELDS)


class FulfilmentError(DomainError):
    """The work cannot be done as asked; the message says why (no personal data)."""


class FulfilmentFailed(FulfilmentError):
    """The work of an approved request failed; it stays approved, and staff were alerted."""


@dataclass(frozen=True)
class Flags:
    """What a request changes in how the company may use the person's data."""

    marketing_stopped: bool | None = None
    processing_stopped: bool | None = None
    processing_scope: str | None = None
    blocked: bool | None = None


@dataclass(frozen=True)
class Suppression:
    """One line of the list other company systems act on."""

    customer_id: str
    marketing_stopped_at: datetime | None
    processing_stopped_at: datetime | None
    processing_scope: str | None
    blocked_at: datetime | None
    erased_at: datetime | None
    erased_fields: tuple[str, ...]


class CustomerDirectory(Protocol):
    """Where the company keeps its customers: this desk's SQL tables, or a CRM."""

    async def lookup(
        self,
        *,
        customer_id: str | None = None,
        phone: str | None = None,
        email: str | None = None,
        iin: str | None = None,
    ) -> CustomerRecord | None: ...

    async def erase(self, customer_id: str, fields: Sequence[str]) -> list[str]:
        """Erase these fields; return the names of those that held a value."""
        ...

    async def update(self, customer_id: str, changes: Mapping[str, str]) -> list[str]:
        """Set these fields (already validated); return the names that changed."""
        ...

    async def set_flags(self, customer_id: str, flags: Flags) -> None: ...

    async def suppressions(self) -> list[Suppression]: ...


class SqlDirectory:
    """The desk's own directory (``aina-dsr customers import`` fills it)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], vault: Vault, clock: Clock
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._clock = clock

    async def _row(self, session: AsyncSession, customer_id: str) -> Customer:
        row = await session.scalar(select(Customer).where(Customer.external_id == customer_id))
        if row is None:
            raise FulfilmentError("the customer is not in the directory")
        return row

    async def lookup(
        self,
        *,
        customer_id: str | None = None,
        phone: str | None = None,
        email: str | None = None,
        iin: str | None = None,
    ) -> CustomerRecord | None:
        conditions = []
        if customer_id is not None:
            conditions.append(Customer.external_id == customer_id)
        if phone is not None:
            index = self._vault.blind_index("phone", normalize_phone(phone))
            conditions.append(Customer.phone_index == index)
        if email is not None:
            index = self._vault.blind_index("email", normalize_email(email))
            conditions.append(Customer.email_index == index)
        if iin is not None:
            conditions.append(
                Customer.iin_index == self._vault.blind_index("iin", validate_iin(iin))
            )
        if not conditions:
            return None
        async with self._sessions() as session:
            row = await session.scalar(
                select(Customer).where(or_(*conditions)).order_by(Customer.id).limit(1)
            )
            return await customer_record(session, self._vault, row) if row is not None else None

    async def erase(self, customer_id: str, fields: Sequence[str]) -> list[str]:
        unknown = sorted(set(fields) - DIRECTORY_FIELDS)
        if unknown:
            raise FulfilmentError(f"unknown fields: {', '.join(unknown)}")
        now = self._clock.now()
        erased: list[str] = []
        async with self._sessions.begin() as session:
            row = await self._row(session, customer_id)
            for name in fields:
                if name == "language":
                    if row.language is not None:
                        erased.append(name)
                    row.language = None
                    continue
                if getattr(row, f"{name}_enc") is not None:
                    erased.append(name)
                setattr(row, f"{name}_enc", None)
                if name in ("phone", "email", "iin"):
                    setattr(row, f"{name}_index", None)
            row.erased_at = now
            row.erased_fields = sorted(set(row.erased_fields or []) | set(fields))
            # The import's row digest was a keyed hash of the erased values too; the next
            # import stores one of what it may keep (workflows.directory.import_holds).
            row.source_digest = ""
            row.updated_at = now
        return erased

    async def update(self, customer_id: str, changes: Mapping[str, str]) -> list[str]:
        unknown = sorted(set(changes) - DIRECTORY_FIELDS)
        if unknown:
            raise FulfilmentError(f"unknown fields: {', '.join(unknown)}")
        changed: list[str] = []
        async with self._sessions.begin() as session:
            row = await self._row(session, customer_id)
            for name, value in changes.items():
                if name == "language":
                    if row.language != value:
                        changed.append(name)
                    row.language = value
                    continue
                if self._vault.decrypt(getattr(row, f"{name}_enc")) != value:
                    changed.append(name)
                setattr(row, f"{name}_enc", self._vault.encrypt(value))
                if name in ("phone", "email", "iin"):
                    setattr(row, f"{name}_index", self._vault.blind_index(name, value))
            row.updated_at = self._clock.now()
        return changed

    async def set_flags(self, customer_id: str, flags: Flags) -> None:
        now = self._clock.now()
        async with self._sessions.begin() as session:
            row = await self._row(session, customer_id)
            if flags.marketing_stopped is not None:
                row.marketing_stopped_at = now if flags.marketing_stopped else None
                if flags.marketing_stopped:
                    row.marketing_consent = False
            if flags.processing_stopped is not None:
                row.processing_stopped_at = now if flags.processing_stopped else None
                row.processing_scope_enc = self._vault.encrypt(flags.processing_scope)
            if flags.blocked is not None:
                row.blocked_at = now if flags.blocked else None
            row.updated_at = now

    async def suppressions(self) -> list[Suppression]:
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Customer)
                .where(
                    or_(
                        Customer.marketing_stopped_at.is_not(None),
                        Customer.processing_stopped_at.is_not(None),
                        Customer.blocked_at.is_not(None),
                        Customer.erased_at.is_not(None),
                    )
                )
                .order_by(Customer.id)
            )
            return [
                Suppression(
                    customer_id=row.external_id,
                    marketing_stopped_at=row.marketing_stopped_at,
                    processing_stopped_at=row.processing_stopped_at,
                    processing_scope=self._vault.decrypt(row.processing_scope_enc),
                    blocked_at=row.blocked_at,
                    erased_at=row.erased_at,
                    erased_fields=tuple(row.erased_fields or ()),
                )
                for row in rows
            ]


def suppressions_json(items: Sequence[Suppression]) -> str:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return json.dumps(
        [
            {
                "customer_id": s.customer_id,
                "marketing_stopped_at": iso(s.marketing_stopped_at),
                "processing_stopped_at": iso(s.processing_stopped_at),
                "processing_scope": s.processing_scope,
                "blocked_at": iso(s.blocked_at),
                "erased_at": iso(s.erased_at),
                "erased_fields": list(s.erased_fields),
            }
            for s in items
        ],
        ensure_ascii=False,
        indent=2,
    )


SUPPRESSION_COLUMNS = (
    "customer_id",
    "marketing_stopped_at",
    "processing_stopped_at",
    "processing_scope",
    "blocked_at",
    "erased_at",
    "erased_fields",
)


def suppressions_csv(items: Sequence[Suppression]) -> str:
    """The suppression list as CSV; the person's words in it never run in a spreadsheet."""
    out = io.StringIO()
    writer = SafeWriter(out)
    writer.writerow(SUPPRESSION_COLUMNS)
    for s in items:
        writer.writerow(
            [
                s.customer_id,
                s.marketing_stopped_at.isoformat() if s.marketing_stopped_at else "",
                s.processing_stopped_at.isoformat() if s.processing_stopped_at else "",
                s.processing_scope or "",
                s.blocked_at.isoformat() if s.blocked_at else "",
                s.erased_at.isoformat() if s.erased_at else "",
                " ".join(s.erased_fields),
            ]
        )
    return out.getvalue()


def field_names(language: str, names: Sequence[str]) -> str:
    """Directory field names as the person reads them, in their language."""
    if not names:
        return "—"
    return ", ".join(catalogue().text(language, f"directory_field.{name}") for name in names)


def parse_corrections(text: str, *, today: date) -> dict[str, str]:
    """Staff's corrections, one ``field: value`` per line, each value checked by the import's rule.

    ``today`` is the desk's local date (no birth date is after it). A refused
    value is named by its line and the rule's words (:mod:`workflows.directory.field_rules`).
    """
    changes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            name, sep, value = line.partition("=")
        name = name.strip().lower().replace(" ", "_")
        value = value.strip()
        if not sep or name not in DIRECTORY_FIELDS or not value:
            raise FulfilmentError(
                f"line {number}: write field: value, with a field among "
                + ", ".join(sorted(DIRECTORY_FIELDS))
            )
        try:
            changes[name] = _stored(name, value, today)
        except InvalidField as exc:
            raise FulfilmentError(f"line {number}: {exc}") from None
    if not changes:
        raise FulfilmentError("no correction given")
    return changes


def checked_corrections(changes: Mapping[str, str], *, today: date) -> dict[str, str]:
    """Corrections given as values (not typed lines), checked and stored as the import would."""
    unknown = sorted(set(changes) - DIRECTORY_FIELDS)
    if unknown:
        raise FulfilmentError(f"unknown fields: {', '.join(unknown)}")
    try:
        return {name: _stored(name, value, today) for name, value in changes.items()}
    except InvalidField as exc:
        raise FulfilmentError(str(exc)) from None


def _stored(name: str, value: str, today: date) -> str:
    stored = account_value(name, value, today=today)
    if stored is None:
        # Only a blank name comes back empty: erasing is a destruction, not a correction.
        raise InvalidField(f"{name}: empty")
    return stored


def parse_field_names(text: str) -> list[str]:
    names = [n.strip().lower().replace(" ", "_") for n in text.replace(",", " ").split()]
    unknown = sorted(set(names) - DIRECTORY_FIELDS)
    if unknown or not names:
        raise FulfilmentError(
            "name the fields to destroy among " + ", ".join(sorted(DIRECTORY_FIELDS))
        )
    return list(dict.fromkeys(names))


class Fulfilment:
    """Approve, do the work in the directory, complete with a notice of what was done."""

    def __init__(
        self,
        service: RequestService,
        directory: CustomerDirectory,
        clock: Clock,
        *,
        timezone: str = "Asia/Almaty",
    ) -> None:
        self._service = service
        self._directory = directory
        self._clock = clock
        self._timezone = timezone

    @property
    def directory(self) -> CustomerDirectory:
        return self._directory

    def _today(self) -> date:
        return self._clock.now().astimezone(ZoneInfo(self._timezone)).date()

    def parse_corrections(self, text: str) -> dict[str, str]:
        """:func:`parse_corrections` against the desk's own date."""
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
        report = build_access_report(
            await self._customer_from(facts.customer_id, facts.contacts),
            reference=view.reference,
            language=view.language,
            now=self._clock.now(),
            timezone=self._timezone,
            subject_contacts=facts.contacts,
        )
        return report.preview()

    async def approve(
        self,
        reference: str,
        staff: Actor,
        *,
        corrections: Mapping[str, str] | None = None,
        fields: Sequence[str] | None = None,
    ) -> RequestView:
        """Approve; once the request is approved (four eyes permitting), fulfil and complete.

        The corrections of a ``rectify`` and the fields of a ``destroy_unlawful``
        are the work this approval agrees to; the request service keeps them,
        holds a second approver to the same, and :meth:`fulfil` does them.
        """
        view = await self._service.get(reference)
        kind = RequestKind(view.kind)
        work: dict[str, Any] = {}
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

    async def fulfil(self, view: RequestView, staff: Actor) -> RequestView:
        """Do the work the approvals agreed to, then complete the request.

        Also what Complete does for an approved request whose work failed part
        way (a directory that did not answer): the same work again, nothing more.
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
        try:
            return await self._work(view, staff, corrections=corrections, fields=fields)
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
                _where(exc),
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
    ) -> RequestView:
        kind = RequestKind(view.kind)
        customer = await self.customer(view)
        found = customer is not None
        details: dict[str, Any] = {"customer_found": found}
        params: dict[str, Any] = {}
        documents: Sequence[Evidence] = ()
        template = "request_completed"
        if kind is RequestKind.ACCESS:
            report = build_access_report(
                customer,
                reference=view.reference,
                language=view.language,
                now=self._clock.now(),
                timezone=self._timezone,
                subject_contacts=await self._service.subject_contacts(view.reference),
            )
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
        )


# What staff read of a failure: enough to act on, short enough for an alert.
REASON_LIMIT = 200


def failure_reason(exc: BaseException) -> str:
    """Why the work failed, for staff: the desk's own reason as it is; another error
    by its type and message, with phones, e-mails and IIN-like numbers masked."""
    if isinstance(exc, DomainError):
        text = str(exc)
    else:
        message = mask_text(" ".join(str(exc).split()))
        text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


def _where(exc: BaseException) -> str:
    """The error's type and the code it came through, never its message (it may quote data)."""
    frames = traceback.extract_tb(exc.__traceback__)
    places = "".join(f"\n  {frame.filename}:{frame.lineno} in {frame.name}" for frame in frames)
    return type(exc).__qualname__ + places
