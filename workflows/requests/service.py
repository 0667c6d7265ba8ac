"""The request service: the one API both channels call.

Each public method is one unit of work: it opens a transaction, checks the
state machine, changes the request, writes the audit event and the outbox
messages the change causes, and commits them together.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from workflows.clock import Clock
from workflows.deadlines.calendar import WorkingCalendar
from workflows.errors import (
    ConcurrentChange,
    IdentityRefused,
    IllegalTransition,
    KindUndecided,
    NotAllowed,
    RequestNotFound,
)
from workflows.i18n import LANGUAGES
from workflows.identity import (
    CodeOutcome,
    StoredCode,
    check_code,
    contact_phone,
    new_code,
    normalize_email,
    tries_left,
)
from workflows.kinds import DEFAULT_KINDS, ClockStart, KindSpec, RequestKind, four_eyes_kinds
from workflows.outbox.queue import (
    Audience,
    Channel,
    NewMessage,
    enqueue,
    enqueue_many,
    reroute_unreachable,
    subject_route,
)
from workflows.persistence.tables import (
    Attachment,
    AuditEvent,
    Customer,
    DataSubject,
    Message,
    Request,
    Verification,
)
from workflows.privacy.audit import record_event
from workflows.privacy.masking import mask_email
from workflows.privacy.vault import Vault
from workflows.requests.approvals import APPROVAL, Approvals
from workflows.requests.classification import likely_kinds, opening_clock
from workflows.requests.customer_match import match_customer
from workflows.requests.fulfilment_failures import FulfilmentFailures
from workflows.requests.limits import Limits, ensure_can_open, ensure_can_send_code
from workflows.requests.reachability import Reachability
from workflows.requests.references import next_reference, next_references
from workflows.requests.staff_actions import KindChanges, since_last_kind_change
from workflows.requests.states import CLOSED, OPEN, Action, Status, next_status
from workflows.snapshots import Actor, ActorKind, AuditView, RequestView

# A person's words shown to staff stay well inside one Telegram message (4096 UTF-16
# units after the markup is read), whatever the letters: 1,500 characters at most.
STAFF_WORDS_LIMIT = 1500


class VerificationMethod:
    TELEGRAM_CONTACT = "telegram_contact"
    EMAIL_CODE = "email_code"
    SMS_CODE = "sms_code"


@dataclass(frozen=True)
class CodeCheck:
    """The answer to a typed or mailed confirmation code."""

    outcome: CodeOutcome
    tries_left: int
    request: RequestView


@dataclass(frozen=True)
class CardFacts:
    """What a staff card shows of a request, read together."""

    view: RequestView
    attachments: list[str]  # the evidence's file names
    contacts: dict[str, str]  # see RequestService.subject_contacts
    customer_id: str | None  # the directory's id of the matched customer


@dataclass(frozen=True)
class SharedContact:
    """A contact card shared in the Telegram dialog: whose card it is, and its number."""

    user_id: int | None
    phone: str


@dataclass(frozen=True)
class Evidence:
    """A file a person sent with their request."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class EmailOpening:
    """One letter that opens a request (:meth:`RequestService.open_by_email`).

    A letter of kind ``unclassified`` carries the kinds it most likely is in
    ``candidates`` (none: any kind), as :meth:`RequestService.open_request` takes them.
    """

    kind: RequestKind | str
    language: str | None
    fields: Mapping[str, Any]
    email: str
    body: str | None
    external_id: str | None
    evidence: Sequence[Evidence] = ()
    candidates: tuple[RequestKind, ...] = ()


@dataclass(frozen=True)
class MailThread:
    """A request as a letter about it needs it (:meth:`RequestService.mail_thread`)."""

    due_at: datetime | None
    missing_fields: tuple[str, ...]
    message_ids: tuple[tuple[str, str], ...]  # (direction, Message-ID) on e-mail, oldest first


def _language(value: str | None) -> str:
    return value if value in LANGUAGES else "en"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis saying so."""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class RequestService(Approvals, KindChanges, Reachability, FulfilmentFailures):
    """Opens and moves requests; see the module docstring.

    Staff's approval lives in :class:`Approvals`; staff's change of a request's
    kind in :class:`KindChanges`; a person coming back to the bot after
    blocking it, in :class:`Reachability`; the work of an approved request
    failing, in :class:`FulfilmentFailures`.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        clock: Clock,
        calendar: WorkingCalendar,
        *,
        kinds: Mapping[RequestKind, KindSpec] = DEFAULT_KINDS,
        staff_user_ids: frozenset[int] | None = None,
        randbelow: Callable[[int], int] = secrets.randbelow,
        four_eyes: frozenset[str] | None = None,  # None: as the kinds table says
        approvals_needed: int = 2,
        limits: Limits | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self._four_eyes = frozenset(
            map(RequestKind, four_eyes_kinds(kinds) if four_eyes is None else four_eyes)
        )
        self._approvals_needed = max(1, approvals_needed)
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._calendar = calendar
        self._kinds = kinds
        self._staff_user_ids = staff_user_ids
        self._randbelow = randbelow

    @property
    def calendar(self) -> WorkingCalendar:
        return self._calendar

    @property
    def kinds(self) -> Mapping[RequestKind, KindSpec]:
        return self._kinds

    # -- reading -----------------------------------------------------------

    async def get(self, reference: str, *, with_events: bool = False) -> RequestView:
        """The request with this reference; raises :class:`RequestNotFound`."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            return await self._view(session, request, with_events=with_events)

    async def list_requests(
        self,
        *,
        status: Sequence[str] | None = None,
        overdue: bool = False,
        open_only: bool = False,
        telegram_user_id: int | None = None,
        with_events: bool = False,
    ) -> list[RequestView]:
        """Requests by due date (the undated last), filtered as asked."""
        now = self._clock.now()
        query = select(Request)
        if status:
            query = query.where(Request.status.in_(list(status)))
        if open_only or overdue:
            query = query.where(Request.closed_at.is_(None))
        if overdue:
            query = query.where(Request.due_at < now)
        if telegram_user_id is not None:
            query = query.join(DataSubject, DataSubject.id == Request.subject_id).where(
                DataSubject.telegram_user_id == telegram_user_id
            )
        query = query.order_by(Request.due_at.is_(None), Request.due_at, Request.id)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
            return [await self._view(session, row, with_events=with_events) for row in rows]

    async def open_count(self, *, telegram_user_id: int) -> int:
        """How many requests the Telegram user has open (what the open-request limit counts)."""
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count(Request.id))
                .join(DataSubject, DataSubject.id == Request.subject_id)
                .where(
                    DataSubject.telegram_user_id == telegram_user_id,
                    Request.status.in_([status.value for status in OPEN]),
                )
            )
        return int(count or 0)

    async def evidence(self, reference: str) -> list[Evidence]:
        """The files attached to a request, decrypted."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            rows = await session.scalars(
                select(Attachment)
                .outerjoin(Message, Message.id == Attachment.message_id)
                .where(
                    Attachment.request_id == request.id,
                    or_(Message.id.is_(None), Message.direction == "in"),
                )
                .order_by(Attachment.id)
            )
            return [
                Evidence(
                    filename=self._vault.decrypt(row.filename_enc) or "",
                    content_type=row.content_type,
                    data=self._vault.decrypt_bytes(row.data_enc),
                )
                for row in rows
            ]

    async def card_facts(self, reference: str) -> CardFacts:
        """Everything a staff card shows, read in one session."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            subject = await session.get_one(DataSubject, request.subject_id)
            return CardFacts(
                view=await self._view(session, request, with_events=True),
                attachments=await self._evidence_names(session, request),
                contacts=self._contacts(subject),
                customer_id=await self._customer_external_id(session, request),
            )

    async def _evidence_names(self, session: AsyncSession, request: Request) -> list[str]:
        """The file names of the person's evidence, without reading the files."""
        rows = await session.scalars(
            select(Attachment.filename_enc)
            .outerjoin(Message, Message.id == Attachment.message_id)
            .where(
                Attachment.request_id == request.id,
                or_(Message.id.is_(None), Message.direction == "in"),
            )
            .order_by(Attachment.id)
        )
        return [self._vault.decrypt(name) or "" for name in rows]

    async def documents(self, reference: str, ids: Sequence[int]) -> list[Evidence]:
        """Files the desk sends with a message (an access report), decrypted, in order."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            rows = await session.scalars(
                select(Attachment)
                .where(Attachment.request_id == request.id, Attachment.id.in_(list(ids)))
                .order_by(Attachment.id)
            )
            return [
                Evidence(
                    filename=self._vault.decrypt(row.filename_enc) or "",
                    content_type=row.content_type,
                    data=self._vault.decrypt_bytes(row.data_enc),
                )
                for row in rows
            ]

    async def subject_contacts(self, reference: str) -> dict[str, str]:
        """What the desk knows of how to reach the person: verified phone, e-mail, Telegram id."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            return self._contacts(await session.get_one(DataSubject, request.subject_id))

    def _contacts(self, subject: DataSubject) -> dict[str, str]:
        contacts = {
            "phone": self._vault.decrypt(subject.phone_enc),
            "email": self._vault.decrypt(subject.email_enc),
            "telegram_user_id": str(subject.telegram_user_id) if subject.telegram_user_id else None,
        }
        return {k: v for k, v in contacts.items() if v}

    async def customer_of(self, reference: str) -> str | None:
        """The directory's id of the customer the request matched, if any."""
        async with self._sessions() as session:
            return await self._customer_external_id(session, await self._load(session, reference))

    async def _customer_external_id(self, session: AsyncSession, request: Request) -> str | None:
        if request.customer_id is None:
            return None
        customer = await session.get(Customer, request.customer_id)
        return customer.external_id if customer is not None else None

    async def messages(self, reference: str) -> list[tuple[str, str, str | None]]:
        """(direction, channel, body) of every message of a request, oldest first."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            rows = await session.scalars(
                select(Message).where(Message.request_id == request.id).order_by(Message.id)
            )
            return [(r.direction, r.channel, self._vault.decrypt(r.body_enc)) for r in rows]

    async def reference_for_message(self, external_id: str) -> str | None:
        """The request a channel message id belongs to (an e-mail's Message-ID, in or out).

        E-mail threading: a reply's In-Reply-To names a Message-ID we sent.
        """
        async with self._sessions() as session:
            reference = await session.scalar(
                select(Request.reference)
                .join(Message, Message.request_id == Request.id)
                .where(Message.external_id == external_id.strip())
                .order_by(Message.id)
                .limit(1)
            )
            return reference

    async def references_for_messages(
        self, external_ids: Iterable[str]
    ) -> dict[str, tuple[str, int]]:
        """:meth:`reference_for_message` for many ids in one query: id -> (reference, request id).

        Ids the desk does not know are left out.
        """
        wanted = sorted({external.strip() for external in external_ids if external.strip()})
        if not wanted:
            return {}
        found: dict[str, tuple[str, int]] = {}
        async with self._sessions() as session:
            rows = await session.execute(
                select(Message.external_id, Request.reference, Request.id)
                .join(Request, Request.id == Message.request_id)
                .where(Message.external_id.in_(wanted))
                .order_by(Message.id)
            )
            for external, reference, request_id in rows.all():
                found.setdefault(str(external), (reference, request_id))
        return found

    async def message_ids(self, reference: str, channel: Channel | str) -> list[tuple[str, str]]:
        """(direction, external id) of a request's messages on ``channel``, oldest first."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            rows = await session.execute(
                select(Message.direction, Message.external_id)
                .where(
                    Message.request_id == request.id,
                    Message.channel == Channel(channel).value,
                    Message.external_id.is_not(None),
                )
                .order_by(Message.id)
            )
            return [(direction, str(external)) for direction, external in rows.all()]

    async def mail_thread(self, reference: str) -> MailThread:
        """What a letter about the request needs, in one query; raises :class:`RequestNotFound`."""
        found = await self.mail_threads([reference])
        if not found:
            raise RequestNotFound(reference)
        return next(iter(found.values()))

    async def mail_threads(self, references: Iterable[str]) -> dict[str, MailThread]:
        """:meth:`mail_thread` for many requests in one query; unknown references left out."""
        wanted = sorted({reference.strip().upper() for reference in references})
        if not wanted:
            return {}
        rows = (
            await self._read(
                select(
                    Request.reference,
                    Request.kind,
                    Request.due_at,
                    Request.fields_enc,
                    Message.direction,
                    Message.external_id,
                )
                .outerjoin(
                    Message,
                    and_(
                        Message.request_id == Request.id,
                        Message.channel == Channel.EMAIL.value,
                        Message.external_id.is_not(None),
                    ),
                )
                .where(Request.reference.in_(wanted))
                .order_by(Message.id)
            )
        ).all()
        heads: dict[str, tuple[str, datetime | None, bytes | None]] = {}
        ids: dict[str, list[tuple[str, str]]] = {}
        for reference, kind, due_at, fields_enc, direction, external in rows:
            heads.setdefault(reference, (kind, due_at, fields_enc))
            if external:
                ids.setdefault(reference, []).append((str(direction), str(external)))
        threads: dict[str, MailThread] = {}
        for reference, (kind, due_at, fields_enc) in heads.items():
            fields = dict(self._vault.decrypt_json(fields_enc) or {})
            threads[reference] = MailThread(
                due_at=due_at,
                missing_fields=self._missing_fields(kind, fields),
                message_ids=tuple(ids.get(reference, ())),
            )
        return threads

    async def _read(self, query: Any) -> Any:
        async with self._sessions() as session:
            return await session.execute(query)

    # -- intake ------------------------------------------------------------

    async def open_request(
        self,
        *,
        kind: RequestKind | str,
        channel: Channel | str,
        language: str | None,
        fields: Mapping[str, Any] | None = None,
        telegram_user_id: int | None = None,
        email: str | None = None,
        body: str | None = None,
        external_id: str | None = None,
        evidence: Sequence[Evidence] = (),
        send_code_to_email: bool = False,
        contact: SharedContact | None = None,
        candidates: Sequence[RequestKind | str] = (),
    ) -> RequestView:
        """Record a new request, unverified, with its clock where it starts on receipt.

        A request of kind ``unclassified`` (only by e-mail: the Telegram dialog
        always knows the kind) keeps ``candidates``, the kinds it most likely
        is (none: any kind), and runs on the shortest of their clocks, each
        counted from now (:mod:`workflows.requests.classification`).

        With ``send_code_to_email`` the acknowledgement to ``email`` carries a
        confirmation code (the e-mail channel's proof of the mailbox).

        With ``contact``, the contact card the Telegram sender shared in the
        dialog, the request is verified in the same transaction, as
        :meth:`verify_by_contact` would, and the person gets the one message
        that it is registered and verified. A card that is not the sender's own
        leaves the request unverified, with the refusal in its audit trail.

        A Telegram user with ``limits.max_open_requests`` open already gets
        :class:`~workflows.requests.limits.TooManyOpen`. An e-mail sender does not: a
        From address is not proven, so counting by it would let anyone fill a
        stranger's quota; the mail intake caps letters per sender instead.
        """
        kind = RequestKind(kind)
        channel = Channel(channel)
        likely = likely_kinds(kind, candidates)
        language = _language(language)
        now = self._clock.now()
        if channel is Channel.TELEGRAM and telegram_user_id is None:
            raise ValueError("a Telegram request needs the sender's user id")
        if channel is Channel.TELEGRAM and kind is RequestKind.UNCLASSIFIED:
            raise ValueError("the Telegram dialog files a request of a known kind")
        normalised_email = normalize_email(email) if email is not None else None
        if channel is Channel.EMAIL and normalised_email is None:
            raise ValueError("an e-mail request needs the sender's address")
        async with self._unit() as session:
            subject = await self._subject(session, telegram_user_id, normalised_email, language)
            if telegram_user_id is not None:
                await ensure_can_open(session, subject.id, self.limits)
            year = self._calendar.local_date(now).year
            request = Request(
                reference=await next_reference(session, year),
                kind=kind.value,
                status=Status.AWAITING_VERIFICATION.value,
                channel=channel.value,
                language=language,
                subject_id=subject.id,
                received_at=now,
                fields_enc=self._vault.encrypt_json(dict(fields or {})),
                updated_at=now,
                candidates=[k.value for k in likely] if likely else None,
            )
            request.clock_started_at, request.due_at = opening_clock(
                kind, likely, now, self._kinds, self._calendar
            )
            session.add(request)
            await session.flush()
            message = await self._inbound(session, request, channel.value, body, external_id)
            await self._attach(session, request, message, evidence)
            event = await self._audit(
                session,
                request,
                Actor(ActorKind.PERSON, channel.value),
                "opened",
                None,
                Status.AWAITING_VERIFICATION,
                _opened(kind.value, language, len(evidence), likely),
            )
            if contact is not None and telegram_user_id is not None:
                if contact.user_id == telegram_user_id:
                    await self._verify_contact(
                        session, request, subject, telegram_user_id, contact.phone
                    )
                    return await self._view(session, request)
                await self._audit(
                    session,
                    request,
                    Actor.person_telegram(telegram_user_id),
                    "contact_refused",
                    request.status,
                    None,
                    {"reason": "not the sender's own contact"},
                )
            params = self._params(request)
            template = "request_received"
            if send_code_to_email and normalised_email is not None:
                params["code"] = await self._new_code(session, request, normalised_email, now)
                template = "request_received_code"
            await self._to_subject(session, request, subject, event, template, params)
            return await self._view(session, request)

    async def open_by_email(
        self,
        letters: Sequence[EmailOpening],
        *,
        within: Callable[[AsyncSession, list[RequestView]], Awaitable[None]] | None = None,
    ) -> list[RequestView]:
        """:meth:`open_request` with ``send_code_to_email`` for many letters, in one transaction.

        Each request is what ``open_request`` makes of its letter alone, in the
        letters' order (references, audit events, codes, acknowledgements), with
        a few statements for the whole batch instead of a dozen per letter.
        ``within`` runs in the same transaction with the new requests' views, so
        the caller's own rows commit with the requests or not at all.
        """
        now = self._clock.now()
        kinds = [RequestKind(letter.kind) for letter in letters]
        likely = [
            likely_kinds(kind, letter.candidates)
            for kind, letter in zip(kinds, letters, strict=True)
        ]
        languages = [_language(letter.language) for letter in letters]
        emails = [normalize_email(letter.email) for letter in letters]
        if not letters:
            return []
        # Rows go in as one multi-row INSERT per table, matched back by a key of their
        # own (not by order, which the database does not promise).
        async with self._unit() as session:
            subjects = await self._subjects_by_email(session, emails, languages)
            year = self._calendar.local_date(now).year
            references = await next_references(session, year, len(letters))
            rows: list[dict[str, Any]] = []
            for letter, kind, candidates, language, subject, reference in zip(
                letters, kinds, likely, languages, subjects, references, strict=True
            ):
                started, due = opening_clock(kind, candidates, now, self._kinds, self._calendar)
                rows.append(
                    {
                        "reference": reference,
                        "kind": kind.value,
                        "status": Status.AWAITING_VERIFICATION.value,
                        "channel": Channel.EMAIL.value,
                        "language": language,
                        "subject_id": subject.id,
                        "received_at": now,
                        "clock_started_at": started,
                        "due_at": due,
                        "fields_enc": self._vault.encrypt_json(dict(letter.fields)),
                        "updated_at": now,
                        "version": 1,
                        "candidates": [k.value for k in candidates] if candidates else None,
                        "kind_changes": 0,
                    }
                )
            made = await session.execute(
                insert(Request).values(rows).returning(Request.id, Request.reference)
            )
            ids = {reference: request_id for request_id, reference in made.all()}
            loaded = await session.scalars(select(Request).where(Request.id.in_(ids.values())))
            by_reference = {request.reference: request for request in loaded}
            requests = [by_reference[reference] for reference in references]
            messages = await self._inbound_many(session, letters, requests, now)
            events: list[AuditEvent] = []
            codes: list[str] = []
            verifications: list[dict[str, Any]] = []
            for letter, request, email, candidates in zip(
                letters, requests, emails, likely, strict=True
            ):
                if letter.evidence:
                    await self._attach(session, request, messages.get(request.id), letter.evidence)
                event = self._event(
                    session,
                    request,
                    Actor(ActorKind.PERSON, Channel.EMAIL.value),
                    "opened",
                    None,
                    Status.AWAITING_VERIFICATION,
                    _opened(request.kind, request.language, len(letter.evidence), candidates),
                )
                events.append(event)
                # A new request has no earlier code to retire (see _new_code).
                code, stored = new_code(now, self._vault.code_key, randbelow=self._randbelow)
                verifications.append(self._code_values(request, email, stored, now))
                codes.append(code)
            await session.execute(insert(Verification).values(verifications))
            await session.flush()  # the audit events: their ids name the acknowledgements
            acknowledgements: list[NewMessage] = []
            for request, subject, event, code in zip(
                requests, subjects, events, codes, strict=True
            ):
                address = self._vault.decrypt(subject.email_enc)
                if address is None:
                    continue
                template = "request_received_code"
                acknowledgements.append(
                    NewMessage(
                        key=f"{request.reference}/{event.id}/subject/{template}",
                        channel=Channel.EMAIL,
                        audience=Audience.SUBJECT,
                        template=template,
                        language=request.language,
                        params={**self._params(request), "code": code},
                        address=address,
                        request_id=request.id,
                    )
                )
            await enqueue_many(session, self._vault, now, acknowledgements)
            views = [await self._view(session, request, fresh=True) for request in requests]
            if within is not None:
                await within(session, views)
            return views

    async def _inbound_many(
        self,
        session: AsyncSession,
        letters: Sequence[EmailOpening],
        requests: Sequence[Request],
        now: datetime,
    ) -> dict[int, Message]:
        """Each letter's message row in one INSERT; the rows by request id where files need them."""
        rows = [
            {
                "request_id": request.id,
                "direction": "in",
                "channel": Channel.EMAIL.value,
                "body_enc": self._vault.encrypt(letter.body),
                "external_id": letter.external_id,
                "created_at": now,
            }
            for letter, request in zip(letters, requests, strict=True)
            if letter.body is not None or letter.external_id is not None
        ]
        if not rows:
            return {}
        await session.execute(insert(Message).values(rows))
        with_files = [r.id for r, letter in zip(requests, letters, strict=True) if letter.evidence]
        if not with_files:
            return {}
        found = await session.scalars(select(Message).where(Message.request_id.in_(with_files)))
        return {message.request_id: message for message in found}

    async def attach(
        self,
        reference: str,
        actor: Actor,
        *,
        body: str | None = None,
        external_id: str | None = None,
        evidence: Sequence[Evidence] = (),
        fields: Mapping[str, Any] | None = None,
        words: str | None = None,
    ) -> RequestView:
        """Add a person's message, files or missing fields to an open request.

        When the request is waiting for the person's information, this is that
        information: the request goes back to staff and they are told.

        With ``words`` (a reply by e-mail: the person's own words, without the
        quote) the message is kept whatever the request's status, a closed one
        too, and staff read the words in the group, under the request's card:
        a reply may be the only sign that a request was filed in someone
        else's name ("that was not me").
        """
        async with self._unit() as session:
            request = await self._load(session, reference)
            subject = await session.get_one(DataSubject, request.subject_id)
            self._check_owner(actor, subject)
            closed = Status(request.status) in CLOSED
            if closed and words is None:
                raise IllegalTransition(request.status, "attach")
            message = await self._inbound(session, request, actor.channel, body, external_id)
            await self._attach(session, request, message, evidence)
            if fields and not closed:
                merged = dict(self._vault.decrypt_json(request.fields_enc) or {})
                merged.update({k: v for k, v in fields.items() if v not in (None, "")})
                request.fields_enc = self._vault.encrypt_json(merged)
            if Status(request.status) is Status.AWAITING_INFO:
                to = Status.IN_REVIEW if request.assignee_id is not None else Status.VERIFIED
                event = await self._move(
                    session, request, Action.INFO_RECEIVED, actor, {"evidence": len(evidence)}, to
                )
                await self._to_staff(session, request, event, "staff_info_received")
            else:
                event = await self._audit(
                    session,
                    request,
                    actor,
                    "message_added",
                    request.status,
                    None,
                    {"evidence": len(evidence), "fields": sorted(fields or {})},
                )
                if request.verified_at is not None and words is None:
                    await self._to_staff(session, request, event, "staff_message_added")
            if words is not None:
                said = {
                    "words": shorten(words, STAFF_WORDS_LIMIT),
                    "sender": mask_email(actor.email),
                }
                await self._to_staff(session, request, event, "staff_mail_reply", said)
            request.updated_at = self._clock.now()
            return await self._view(session, request)

    # -- identity ----------------------------------------------------------

    async def verify_by_contact(
        self, reference: str, *, sender_user_id: int, contact_user_id: int | None, phone: str
    ) -> RequestView:
        """Verify with the phone number Telegram vouches for.

        A shared contact proves the number only when it is the sender's own
        contact card: ``contact.user_id`` equal to the sender's id.
        """
        async with self._unit() as session:
            request = await self._load(session, reference)
            subject = await session.get_one(DataSubject, request.subject_id)
            self._check_owner(Actor.person_telegram(sender_user_id), subject)
            if contact_user_id != sender_user_id:
                await self._audit(
                    session,
                    request,
                    Actor.person_telegram(sender_user_id),
                    "contact_refused",
                    request.status,
                    None,
                    {"reason": "not the sender's own contact"},
                )
                await session.commit()
                raise IdentityRefused("the shared contact is not the sender's own")
            await self._verify_contact(session, request, subject, sender_user_id, phone)
            return await self._view(session, request)

    async def send_email_code(self, reference: str, actor: Actor, email: str) -> None:
        """Send a confirmation code to ``email`` (the Telegram dialog's alternative).

        A new code replaces any code still pending for the request. At most
        ``limits.codes_per_hour`` are sent for one person in an hour; past that,
        :class:`~workflows.requests.limits.TooManyCodes` says when the next may go.
        """
        normalised = normalize_email(email)
        async with self._unit() as session:
            request = await self._load(session, reference)
            subject = await session.get_one(DataSubject, request.subject_id)
            self._check_owner(actor, subject)
            next_status(Status(request.status), Action.VERIFY)
            now = self._clock.now()
            await ensure_can_send_code(session, subject.id, now, self.limits)
            code = await self._new_code(session, request, normalised, now)
            event = await self._audit(
                session, request, actor, "code_sent", request.status, None, {"method": "email"}
            )
            await enqueue(
                session,
                self._vault,
                now,
                key=f"{request.reference}/{event.id}/code",
                channel=Channel.EMAIL,
                audience=Audience.SUBJECT,
                template="verification_code",
                language=request.language,
                params={**self._params(request), "code": code},
                address=normalised,
                request_id=request.id,
            )

    async def verify_by_code(self, reference: str, attempt: str, actor: Actor) -> CodeCheck:
        """Check a confirmation code; the request is verified when it matches."""
        async with self._unit() as session:
            request = await self._load(session, reference)
            subject = await session.get_one(DataSubject, request.subject_id)
            row = await session.scalar(
                select(Verification)
                .where(
                    Verification.request_id == request.id,
                    Verification.method == VerificationMethod.EMAIL_CODE,
                )
                .order_by(Verification.id.desc())
                .limit(1)
            )
            if actor.kind is ActorKind.PERSON and actor.email is not None and row is not None:
                await self._check_code_address(session, request, row, actor.email)
            else:
                self._check_owner(actor, subject, allow_unknown_email=True)
            next_status(Status(request.status), Action.VERIFY)
            now = self._clock.now()
            if row is None or row.code_hash is None or row.code_salt is None:
                outcome, left = CodeOutcome.DEAD, 0
            else:
                stored = StoredCode(
                    code_hash=row.code_hash,
                    salt=row.code_salt,
                    created_at=row.created_at,
                    expires_at=row.expires_at or now,
                    attempts=row.attempts,
                    dead=row.dead,
                    used=row.used,
                )
                outcome, updated = check_code(stored, attempt, self._vault.code_key, now)
                row.attempts, row.dead, row.used = updated.attempts, updated.dead, updated.used
                left = tries_left(updated)
            if outcome is CodeOutcome.OK and row is not None:
                row.verified_at = now
                email = self._vault.decrypt(row.target_enc)
                subject.email_enc = self._vault.encrypt(email)
                subject.email_index = row.target_index
                await self._verified(session, request, subject, VerificationMethod.EMAIL_CODE)
                if subject.telegram_unreachable and email is not None:
                    await reroute_unreachable(session, self._vault, now, subject.id, email)
            else:
                await self._audit(
                    session,
                    request,
                    actor,
                    "code_refused",
                    request.status,
                    None,
                    {"outcome": outcome.value, "tries_left": left},
                )
            return CodeCheck(outcome, left, await self._view(session, request))

    async def _check_code_address(
        self, session: AsyncSession, request: Request, row: Verification, email: str
    ) -> None:
        """A mailed code proves only the mailbox it went to: any other sender is refused.

        Refused before the code is looked at, so a stranger who knows the
        reference cannot use up the person's tries; the refusal is audited
        (the address masked) and kept, though :class:`NotAllowed` is raised.
        """
        normalised = normalize_email(email)
        if row.target_index == self._vault.blind_index("email", normalised):
            return
        await self._audit(
            session,
            request,
            Actor.system(Channel.EMAIL.value),
            "code_refused",
            request.status,
            None,
            {"outcome": "other_address", "sender": mask_email(normalised)},
        )
        await session.commit()
        raise NotAllowed("the code was not sent to this address")

    # -- staff -------------------------------------------------------------

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

    async def confirm_evidence(self, reference: str, staff: Actor) -> RequestView:
        """Staff record that the confirming documents are in: the clock starts now.

        Only for kinds whose clock starts on confirmation (``rectify``,
        ``destroy_unlawful``); a clock that runs already is left alone.
        """
        async with self._unit() as session:
            request = await self._load(session, reference)
            self._check_staff(staff)
            spec = self._kinds.get(RequestKind(request.kind))
            if (
                spec is None  # unclassified: its clock runs from receipt
                or spec.starts is not ClockStart.CONFIRMATION
                or request.clock_started_at is not None
            ):
                raise IllegalTransition(request.status, "start the clock of")
            if Status(request.status) in CLOSED:
                raise IllegalTransition(request.status, "start the clock of")
            now = self._clock.now()
            request.clock_started_at = now
            request.due_at = spec.due_at(now, self._calendar)
            request.updated_at = now
            event = await self._audit(
                session,
                request,
                staff,
                "clock_started",
                request.status,
                None,
                {"due_at": request.due_at.isoformat()},
            )
            await self._to_staff(session, request, event, "staff_card")
            subject = await session.get_one(DataSubject, request.subject_id)
            await self._to_subject(session, request, subject, event, "clock_started")
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
        """Staff ask the person for more information; the clock keeps running."""
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
    ) -> RequestView:
        """Staff close an approved request as done; the person is told.

        The fulfilment passes what it did: the notice to send (``template`` with
        ``params``), what the audit event records (``details``: field names,
        never values) and the files to send with the notice (``documents``).
        """
        async with self._unit() as session:
            request = await self._load(session, reference)
            self._check_staff(staff)
            _ensure_classified(request)
            event = await self._move(session, request, Action.COMPLETE, staff, dict(details or {}))
            subject = await session.get_one(DataSubject, request.subject_id)
            notice = {**self._params(request), "note": note or "", **(params or {})}
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

    # -- the person and the system ----------------------------------------

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

    async def unverified_before(self, cutoff: datetime) -> list[str]:
        """References of requests still unverified that were received before ``cutoff``."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Request.reference)
                .where(
                    Request.status == Status.AWAITING_VERIFICATION.value,
                    Request.received_at < cutoff,
                )
                .order_by(Request.id)
            )
            return list(rows)

    # -- internals ---------------------------------------------------------

    def _unit(self) -> Any:
        return _UnitOfWork(self._sessions)

    async def _load(self, session: AsyncSession, reference: str) -> Request:
        request = await session.scalar(
            select(Request).where(Request.reference == reference.strip().upper())
        )
        if request is None:
            raise RequestNotFound(reference)
        return request

    def _check_staff(self, staff: Actor) -> None:
        if staff.kind is not ActorKind.STAFF or staff.staff_id is None:
            raise NotAllowed("only staff can do this")
        if self._staff_user_ids is not None and staff.staff_id not in self._staff_user_ids:
            raise NotAllowed("this user is not on the staff list")

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

    async def _subject(
        self,
        session: AsyncSession,
        telegram_user_id: int | None,
        email: str | None,
        language: str,
    ) -> DataSubject:
        subject: DataSubject | None = None
        email_index = self._vault.blind_index("email", email)
        if telegram_user_id is not None:
            subject = await session.scalar(
                select(DataSubject).where(DataSubject.telegram_user_id == telegram_user_id)
            )
        elif email_index is not None:
            subject = await session.scalar(
                select(DataSubject)
                .where(DataSubject.email_index == email_index)
                .order_by(DataSubject.id)
                .limit(1)
            )
        if subject is None:
            subject = DataSubject(
                telegram_user_id=telegram_user_id,
                telegram_unreachable=False,
                language=language,
                created_at=self._clock.now(),
            )
            if email is not None and telegram_user_id is None:
                # The mailbox is only proven by the code; until then it is where we answer.
                subject.email_enc = self._vault.encrypt(email)
                subject.email_index = email_index
            session.add(subject)
            await session.flush()
        subject.language = language
        if telegram_user_id is not None and subject.telegram_unreachable:
            subject.telegram_unreachable = False  # they are writing to the bot right now
        return subject

    async def _subjects_by_email(
        self, session: AsyncSession, emails: Sequence[str], languages: Sequence[str]
    ) -> list[DataSubject]:
        """:meth:`_subject` for many e-mail senders: a query and an INSERT for all, in order."""
        indexes = [self._vault.blind_index("email", email) for email in emails]
        wanted = DataSubject.email_index.in_({i for i in indexes if i is not None})
        found: dict[str | None, DataSubject] = {}
        for row in await session.scalars(
            select(DataSubject).where(wanted).order_by(DataSubject.id)
        ):
            found.setdefault(row.email_index, row)
        new: dict[str | None, dict[str, Any]] = {}
        for email, index, language in zip(emails, indexes, languages, strict=True):
            if index not in found and index not in new:
                new[index] = {
                    "telegram_user_id": None,
                    "telegram_unreachable": False,
                    "language": language,
                    "created_at": self._clock.now(),
                    "email_enc": self._vault.encrypt(email),
                    "email_index": index,
                }
        if new:
            made = await session.scalars(
                insert(DataSubject).values(list(new.values())).returning(DataSubject.id)
            )
            loaded = await session.scalars(
                select(DataSubject).where(DataSubject.id.in_(list(made)))
            )
            found.update({row.email_index: row for row in loaded})
        subjects = [found[index] for index in indexes]
        for subject, language in zip(subjects, languages, strict=True):
            subject.language = language
        return subjects

    def _code_values(
        self, request: Request, email: str, stored: StoredCode, now: datetime
    ) -> dict[str, Any]:
        """A new e-mail code's ``verification`` row (see :meth:`_new_code`)."""
        return {
            "request_id": request.id,
            "method": VerificationMethod.EMAIL_CODE,
            "target_enc": self._vault.encrypt(email),
            "target_index": self._vault.blind_index("email", email),
            "code_hash": stored.code_hash,
            "code_salt": stored.salt,
            "attempts": 0,
            "dead": False,
            "used": False,
            "created_at": now,
            "expires_at": stored.expires_at,
        }

    async def _new_code(
        self, session: AsyncSession, request: Request, email: str, now: datetime
    ) -> str:
        pending = await session.scalars(
            select(Verification).where(
                Verification.request_id == request.id,
                Verification.method == VerificationMethod.EMAIL_CODE,
                Verification.used.is_(False),
                Verification.dead.is_(False),
            )
        )
        for old in pending:
            old.dead = True
        code, stored = new_code(now, self._vault.code_key, randbelow=self._randbelow)
        session.add(
            Verification(
                request_id=request.id,
                method=VerificationMethod.EMAIL_CODE,
                target_enc=self._vault.encrypt(email),
                target_index=self._vault.blind_index("email", email),
                code_hash=stored.code_hash,
                code_salt=stored.salt,
                attempts=0,
                dead=False,
                used=False,
                created_at=now,
                expires_at=stored.expires_at,
            )
        )
        return code

    async def _verify_contact(
        self,
        session: AsyncSession,
        request: Request,
        subject: DataSubject,
        sender_user_id: int,
        phone: str,
    ) -> None:
        """Verify with the number of the sender's own contact card (checked by the caller)."""
        next_status(Status(request.status), Action.VERIFY)
        normalised = contact_phone(phone)
        now = self._clock.now()
        subject.phone_enc = self._vault.encrypt(normalised)
        subject.phone_index = self._vault.blind_index("phone", normalised)
        session.add(
            Verification(
                request_id=request.id,
                method=VerificationMethod.TELEGRAM_CONTACT,
                target_enc=self._vault.encrypt(normalised),
                target_index=subject.phone_index,
                telegram_user_id=sender_user_id,
                created_at=now,
                verified_at=now,
                used=True,
            )
        )
        await self._verified(session, request, subject, VerificationMethod.TELEGRAM_CONTACT)

    async def _verified(
        self, session: AsyncSession, request: Request, subject: DataSubject, method: str
    ) -> None:
        now = self._clock.now()
        request.verified_at = now
        request.verified_by = method
        request.customer_id = await match_customer(session, subject)
        event = await self._move(
            session,
            request,
            Action.VERIFY,
            Actor(ActorKind.PERSON, request.channel),
            {"method": method, "customer_matched": request.customer_id is not None},
        )
        await self._to_subject(session, request, subject, event, "request_verified")
        await self._to_staff(session, request, event, "staff_card")

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
        actor_id: str | None = None
        if actor.kind is ActorKind.STAFF:
            actor_id = str(actor.staff_id)
        elif actor.kind is ActorKind.PERSON:
            actor_id = f"subject:{request.subject_id}"
        return record_event(
            session,
            request_id=request.id,
            reference=request.reference,
            at=self._clock.now(),
            actor=actor.kind.value,
            actor_id=actor_id,
            actor_name=actor.name,
            channel=actor.channel,
            action=action,
            from_status=str(from_status) if from_status is not None else None,
            to_status=str(to_status) if to_status is not None else None,
            details=details,
        )

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
            session.add(
                Attachment(
                    request_id=request.id,
                    message_id=message.id if message is not None else None,
                    filename_enc=self._vault.encrypt(item.filename),
                    content_type=item.content_type[:200],
                    size=len(item.data),
                    sha256=hashlib.sha256(item.data).hexdigest(),
                    data_enc=self._vault.encrypt_bytes(item.data),
                    created_at=self._clock.now(),
                )
            )

    async def _document(
        self, session: AsyncSession, request: Request, message: Message, item: Evidence
    ) -> Attachment:
        row = Attachment(
            request_id=request.id,
            message_id=message.id,
            filename_enc=self._vault.encrypt(item.filename),
            content_type=item.content_type[:200],
            size=len(item.data),
            sha256=hashlib.sha256(item.data).hexdigest(),
            data_enc=self._vault.encrypt_bytes(item.data),
            created_at=self._clock.now(),
        )
        session.add(row)
        await session.flush()
        return row

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
        """Tell the person, on the channel they used (e-mail if Telegram refused us last time).

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
            return
        channel, address = route
        await enqueue(
            session,
            self._vault,
            self._clock.now(),
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
        await enqueue(
            session,
            self._vault,
            self._clock.now(),
            key=f"{request.reference}/{event.id}/staff/{template}",
            channel=Channel.TELEGRAM,
            audience=Audience.STAFF_GROUP,
            template=template,
            language="en",
            params={**self._params(request), "action": event.action, **(extra or {})},
            request_id=request.id,
        )

    async def _view(
        self,
        session: AsyncSession,
        request: Request,
        *,
        with_events: bool = False,
        fresh: bool = False,
    ) -> RequestView:
        """The request as channels see it; ``fresh``: made in this transaction (no approvals)."""
        subject = await session.get_one(DataSubject, request.subject_id)
        fields = dict(self._vault.decrypt_json(request.fields_enc) or {})
        events: tuple[AuditView, ...] = ()
        if with_events:
            rows = await session.scalars(
                select(AuditEvent)
                .where(AuditEvent.request_id == request.id)
                .order_by(AuditEvent.id)
            )
            events = tuple(
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
            events=events,
            approvals=tuple((await self._approvers(session, request)).values())
            if RequestKind(request.kind) in self._four_eyes and not fresh
            else (),
            candidates=tuple(request.candidates or ()),
        )

    def _missing_fields(self, kind: str, fields: Mapping[str, Any]) -> tuple[str, ...]:
        """What the kind needs and the request lacks; an unclassified one needs nothing yet."""
        spec = self._kinds.get(RequestKind(kind))
        return tuple(spec.missing_fields(fields)) if spec is not None else ()

    async def count_open(self) -> int:
        """How many requests are open."""
        async with self._sessions() as session:
            total = await session.scalar(
                select(func.count(Request.id)).where(Request.status.in_([s.value for s in OPEN]))
            )
            return int(total or 0)


class _UnitOfWork:
    """A transaction that turns a lost optimistic-lock race into :class:`ConcurrentChange`."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> AsyncSession:
        self._session = self._sessions()
        await self._session.begin()
        return self._session

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        assert self._session is not None
        session = self._session
        try:
            if exc_type is None:
                try:
                    await session.commit()
                except StaleDataError as error:
                    raise ConcurrentChange("the request changed meanwhile; try again") from error
            else:
                await session.rollback()
        finally:
            await session.close()
        if exc_type is not None and issubclass(exc_type, StaleDataError):
            raise ConcurrentChange("the request changed meanwhile; try again") from exc
        return False


def _opened(
    kind: str, language: str, evidence: int, candidates: Sequence[RequestKind]
) -> dict[str, Any]:
    """The ``opened`` audit event's details (an unclassified request's likely kinds too)."""
    details: dict[str, Any] = {"kind": kind, "language": language, "evidence": evidence}
    if candidates:
        details["candidates"] = [candidate.value for candidate in candidates]
    return details


def _ensure_classified(request: Request) -> None:
    if request.kind == RequestKind.UNCLASSIFIED.value:
        raise KindUndecided(request.reference)


def verification_cutoff(now: datetime, days: int) -> datetime:
    """Requests received before this instant and still unverified have expired."""
    return now - timedelta(days=days)
