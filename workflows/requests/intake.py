"""Filing requests, by Telegram, e-mail or post, one or a batch, along one path; and adding to them.

Opening one request is a batch of one: :meth:`Intake.open_request` and
:meth:`Intake.open_by_email` both file through :meth:`Intake._file` (the
request rows, the person's message and files, the ``opened`` events) and
:meth:`Intake._acknowledge` (the confirmation codes and the acknowledgements).
What only one of them does stays with it: the Telegram sender's open-request
limit and the contact card shared in the dialog; the letters' one transaction
with the mail intake's own rows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from workflows.errors import IllegalTransition
from workflows.i18n import LANGUAGES
from workflows.identity import normalize_email
from workflows.kinds import RequestKind
from workflows.outbox.queue import Channel, NewMessage, enqueue_many
from workflows.persistence.tables import AuditEvent, DataSubject, Message, Request, Verification
from workflows.privacy.audit_batch import record_events
from workflows.privacy.masking import mask_email
from workflows.requests.classification import OpeningClocks, likely_kinds
from workflows.requests.documents import DocumentClock
from workflows.requests.limits import ensure_can_open
from workflows.requests.queries import filed_reference
from workflows.requests.records import Evidence
from workflows.requests.references import next_references
from workflows.requests.states import CLOSED, Action, Status
from workflows.requests.subjects import email_subjects, telegram_subject
from workflows.requests.verification import IdentityChecks
from workflows.snapshots import Actor, ActorKind, RequestView

# A person's words shown to staff stay well inside one Telegram message (4096 UTF-16
# units after the markup is read), whatever the letters: 1,500 characters at most.
STAFF_WORDS_LIMIT = 1500


@dataclass(frozen=True)
class SharedContact:
    """A contact card shared in the Telegram dialog: whose card it is, and its number."""

    user_id: int | None
    phone: str


@dataclass(frozen=True)
class EmailOpening:
    """One letter that opens a request (:meth:`Intake.open_by_email`).

    A letter of kind ``unclassified`` carries the kinds it most likely is in
    ``candidates`` (none: any kind), as :meth:`Intake.open_request` takes them.
    ``email`` is the sender's address as :func:`~workflows.identity.normalize_email`
    gave it (the mail parser's ``sender``): it is not validated again.
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
class _Filing:
    """One request to file, as a channel gave it, its values checked and normalised."""

    kind: RequestKind
    likely: tuple[RequestKind, ...]
    channel: Channel
    language: str
    fields: Mapping[str, Any]
    email: str | None
    body: str | None
    external_id: str | None
    evidence: Sequence[Evidence]
    code: bool  # the acknowledgement to ``email`` carries a confirmation code
    received: datetime | None = None  # when it came, if not now (a letter by post)

    def opened(self) -> dict[str, Any]:
        """The ``opened`` audit event's details (an unclassified request's likely kinds too)."""
        details: dict[str, Any] = {
            "kind": self.kind.value,
            "language": self.language,
            "evidence": len(self.evidence),
        }
        if self.likely:
            details["candidates"] = [candidate.value for candidate in self.likely]
        if self.received is not None:
            details["received_at"] = self.received.isoformat()
        return details


def language_or_default(value: str | None) -> str:
    """One of the desk's languages: ``value``, or English for none or another."""
    return value if value in LANGUAGES else "en"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis saying so."""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _letter(letter: EmailOpening) -> _Filing:
    """What :meth:`Intake.open_by_email` files of one letter."""
    kind = RequestKind(letter.kind)
    return _Filing(
        kind=kind,
        likely=likely_kinds(kind, letter.candidates),
        channel=Channel.EMAIL,
        language=language_or_default(letter.language),
        fields=letter.fields,
        email=letter.email,  # normalised by the parser (see EmailOpening)
        body=letter.body,
        external_id=letter.external_id,
        evidence=letter.evidence,
        code=True,
    )


class Intake(IdentityChecks, DocumentClock):
    """The request service's use cases of filing a request and adding to it (a mixin).

    It builds on :class:`~workflows.requests.verification.IdentityChecks`: a
    contact card shared while filing verifies at once, and a letter's
    acknowledgement carries a confirmation code.
    """

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
        once: bool = False,
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
        that it is registered and verified (and, for a kind done at once, that
        it is done: :meth:`do_at_once`). A card that is not the sender's own
        leaves the request unverified, with the refusal in its audit trail.

        A Telegram user with ``limits.max_open_requests`` open already gets
        :class:`~workflows.requests.limits.TooManyOpen`. An e-mail sender does not: a
        From address is not proven, so counting by it would let anyone fill a
        stranger's quota; the mail intake caps letters per sender instead.
        With ``once``, a message filed already (``external_id``) returns its request.
        """
        filing = _one(
            RequestKind(kind),
            Channel(channel),
            language,
            fields,
            telegram_user_id,
            email,
            body,
            external_id,
            evidence,
            send_code_to_email,
            candidates,
        )
        verified: RequestView | None = None
        async with self._unit() as session:
            filed = await filed_reference(session, external_id) if once else None
            if filed is not None:  # found in this transaction: never filed twice
                return await self._view(session, await self._load(session, filed))
            subject = await self._sender(session, filing, telegram_user_id)
            (request,), (event,) = await self._file(session, [filing], [subject])
            if contact is not None and telegram_user_id is not None:
                if contact.user_id == telegram_user_id:
                    await self._verify_contact(
                        session, request, subject, telegram_user_id, contact.phone
                    )
                    verified = await self._view(session, request, fresh=True)
                else:
                    await self._refuse_contact(session, request, telegram_user_id)
            if verified is None:
                await self._acknowledge(session, [filing], [request], [subject], [event])
                return await self._view(session, request, fresh=True)
        return await self._then_at_once(verified)

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
        filings = [_letter(letter) for letter in letters]
        if not filings:
            return []
        async with self._unit() as session:
            emails = [filing.email or "" for filing in filings]
            languages = [filing.language for filing in filings]
            subjects = await email_subjects(
                session, self._vault, emails, languages, self._clock.now()
            )
            requests, events = await self._file(session, filings, subjects)
            await self._acknowledge(session, filings, requests, subjects, events)
            views = [
                await self._view(session, request, fresh=True, subject=subject)
                for request, subject in zip(requests, subjects, strict=True)
            ]
            if within is not None:
                await within(session, views)
            return views

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
        information: the request goes back to staff and they are told. Files
        are documents: for a kind whose clock waits for them, their arrival
        starts it, or starts it again when staff had asked for more
        (:mod:`workflows.requests.documents`).

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
            asked = Status(request.status) is Status.AWAITING_INFO
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
            await self._documents_arrived(
                session, request, subject, actor, len(evidence), asked=asked
            )
            request.updated_at = self._clock.now()
            return await self._view(session, request)

    async def _sender(
        self, session: AsyncSession, filing: _Filing, telegram_user_id: int | None
    ) -> DataSubject:
        """Who files one request: a Telegram user, within their open-request limit, or a mailbox."""
        if telegram_user_id is None:
            assert filing.email is not None  # an e-mail request has its sender's address
            (subject,) = await email_subjects(
                session, self._vault, [filing.email], [filing.language], self._clock.now()
            )
            return subject
        subject = await telegram_subject(
            session, telegram_user_id, filing.language, self._clock.now()
        )
        await ensure_can_open(session, subject.id, self.limits)
        return subject

    # -- the one filing path -------------------------------------------------------

    async def _file(
        self, session: AsyncSession, filings: Sequence[_Filing], subjects: Sequence[DataSubject]
    ) -> tuple[list[Request], list[AuditEvent]]:
        """The requests' rows, the people's messages and files, and the ``opened`` events.

        Rows go in as one multi-row INSERT per table, the requests matched back by
        their references (not by order, which the database does not promise).
        """
        now = self._clock.now()
        references = await next_references(
            session, self._calendar.local_date(now).year, len(filings)
        )
        clocks = OpeningClocks(self._kinds, self._calendar)
        rows = [
            self._request_row(filing, subject, reference, now, clocks)
            for filing, subject, reference in zip(filings, subjects, references, strict=True)
        ]
        # NULLs written as NULL: rows with a clock and rows without stay one statement.
        made = await session.scalars(
            insert(Request).returning(Request).execution_options(render_nulls=True), rows
        )
        by_reference = {request.reference: request for request in made}
        requests = [by_reference[reference] for reference in references]
        messages = await self._inbound_many(session, filings, requests, now)
        opened: list[dict[str, Any]] = []
        for filing, request in zip(filings, requests, strict=True):
            if filing.evidence:
                await self._attach(session, request, messages.get(request.id), filing.evidence)
            person = Actor(ActorKind.PERSON, filing.channel.value)
            status = Status.AWAITING_VERIFICATION
            opened.append(
                self._event_values(request, person, "opened", None, status, filing.opened())
            )
        # One INSERT for the batch's events, chained in its order; their ids name the
        # acknowledgements.
        events = await record_events(session, opened)
        return requests, events

    def _request_row(
        self,
        filing: _Filing,
        subject: DataSubject,
        reference: str,
        now: datetime,
        clocks: OpeningClocks,
    ) -> dict[str, Any]:
        """A new request's row: unverified, its clock running where it starts on receipt.

        A letter by post runs from its date of receipt, whatever its kind: what
        the letter encloses came with it.
        """
        received = filing.received or now
        documents = bool(filing.evidence) or filing.channel is Channel.POST
        started, due = clocks.of(filing.kind, filing.likely, received, documents=documents)
        return {
            "reference": reference,
            "kind": filing.kind.value,
            "status": Status.AWAITING_VERIFICATION.value,
            "channel": filing.channel.value,
            "language": filing.language,
            "subject_id": subject.id,
            "received_at": received,
            "clock_started_at": started,
            "due_at": due,
            "fields_enc": self._vault.encrypt_json(dict(filing.fields)),
            "updated_at": now,
            "version": 1,
            "candidates": [k.value for k in filing.likely] if filing.likely else None,
            "kind_changes": 0,
        }

    async def _inbound_many(
        self,
        session: AsyncSession,
        filings: Sequence[_Filing],
        requests: Sequence[Request],
        now: datetime,
    ) -> dict[int, Message]:
        """Each person's message row in one INSERT; the rows by request id where files need them."""
        rows = [
            {
                "request_id": request.id,
                "direction": "in",
                "channel": filing.channel.value,
                "body_enc": self._vault.encrypt(filing.body),
                "external_id": filing.external_id,
                "created_at": now,
            }
            for filing, request in zip(filings, requests, strict=True)
            if filing.body is not None or filing.external_id is not None
        ]
        if not rows:
            return {}
        await session.execute(insert(Message), rows)
        with_files = [r.id for r, filing in zip(requests, filings, strict=True) if filing.evidence]
        if not with_files:
            return {}
        found = await session.scalars(select(Message).where(Message.request_id.in_(with_files)))
        return {message.request_id: message for message in found}

    async def _acknowledge(
        self,
        session: AsyncSession,
        filings: Sequence[_Filing],
        requests: Sequence[Request],
        subjects: Sequence[DataSubject],
        events: Sequence[AuditEvent],
    ) -> None:
        """Tell each person their request is in, with a confirmation code where one is due."""
        now = self._clock.now()
        codes: dict[int, str] = {}
        rows: list[dict[str, Any]] = []
        for filing, request in zip(filings, requests, strict=True):
            if filing.code and filing.email is not None:
                # A new request has no earlier code to retire (see _new_code).
                codes[request.id], row = self._first_code(request, filing.email, now)
                rows.append(row)
        if rows:
            await session.execute(insert(Verification), rows)
        acknowledgements: list[NewMessage] = []
        for request, subject, event in zip(requests, subjects, events, strict=True):
            params = self._params(request)
            template = "request_received"
            if request.id in codes:
                params["code"] = codes[request.id]
                template = "request_received_code"
            message = await self._subject_message(
                session, request, subject, event, template, params
            )
            if message is not None:
                acknowledgements.append(message)
        await enqueue_many(session, self._vault, now, acknowledgements)


def _one(
    kind: RequestKind,
    channel: Channel,
    language: str | None,
    fields: Mapping[str, Any] | None,
    telegram_user_id: int | None,
    email: str | None,
    body: str | None,
    external_id: str | None,
    evidence: Sequence[Evidence],
    send_code_to_email: bool,
    candidates: Sequence[RequestKind | str],
) -> _Filing:
    """What :meth:`Intake.open_request` files, its arguments checked."""
    likely = likely_kinds(kind, candidates)
    if channel is Channel.TELEGRAM and telegram_user_id is None:
        raise ValueError("a Telegram request needs the sender's user id")
    if channel is Channel.TELEGRAM and kind is RequestKind.UNCLASSIFIED:
        raise ValueError("the Telegram dialog files a request of a known kind")
    normalised_email = normalize_email(email) if email is not None else None
    if channel is Channel.EMAIL and normalised_email is None:
        raise ValueError("an e-mail request needs the sender's address")
    return _Filing(
        kind=kind,
        likely=likely,
        channel=channel,
        language=language_or_default(language),
        fields=dict(fields or {}),
        email=normalised_email,
        body=body,
        external_id=external_id,
        evidence=evidence,
        code=send_code_to_email and normalised_email is not None,
    )
