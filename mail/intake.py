"""One letter in, one outcome: a new request, a reply on a known one, or a record only.

Every letter gets one ``inbound_mail`` row, keyed by its Message-ID (or its
content), so a letter seen twice is handled once. The row is written after the
request service has committed what the letter caused; a crash in between is
caught on the next pass, because the service recorded the letter's
Message-ID with the request (see :meth:`MailIntake.handle`).

Caps protect the people whose addresses a letter may name (see
:mod:`mail.caps`): one mailbox (plus-tags and case folded) gets at most
``max_per_sender_per_hour`` letters acted on in an hour, and acknowledgements
to addresses nobody has verified are capped per mailbox and in total. A
letter a cap holds back is kept, raw and encrypted, with the cap's outcome
(``rate_limited``, ``capped_mailbox``, ``capped_total``): not answered, never
lost, and staff are told once per cap and hour (per mailbox for the first two).

A letter over the poller's size limit arrives as its headers alone (the
poller never fetches its body): it is recorded as ``too_large`` with those
headers, staff are told, and the writer, when the caps allow, gets a short
note on how to send it again.

Where our mail server vouches for its checks (``authserv_id``, see
:mod:`mail.authentication`), a letter that fails DMARC is not from the
address it shows: it is kept raw and encrypted with the outcome
``sender_unverified``, never answered, and staff are told in the group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.authentication import dmarc_failed
from mail.caps import (
    DEFAULT_ACKS_IN_TOTAL,
    DEFAULT_ACKS_PER_MAILBOX,
    DEFAULT_LETTERS_PER_SENDER,
    Cap,
    Caps,
    Held,
    Ledger,
    read_ledger,
    told_already,
)
from mail.classifier import KindClassifier, default_classifier
from mail.parsing import MailFile, ParsedMail, mail_key, parse_mail
from mail.spam import SpamRules
from mail.understanding import (
    Disposition,
    Understanding,
    automatic,
    detect_language,
    understand,
)
from workflows.clock import Clock
from workflows.errors import IllegalTransition, NotAllowed, RequestNotFound
from workflows.identity import CodeOutcome, mailbox_of
from workflows.kinds import RequestKind
from workflows.outbox.queue import Audience, Channel, NewMessage, enqueue_many
from workflows.persistence.tables import InboundMail
from workflows.privacy.masking import mask_email
from workflows.privacy.vault import Vault
from workflows.requests.intake import EmailOpening
from workflows.requests.records import Evidence
from workflows.requests.service import RequestService
from workflows.requests.states import Status
from workflows.snapshots import Actor, RequestView

log = logging.getLogger(__name__)

MB = 1024 * 1024
DEFAULT_MAX_ATTACHMENT = 10 * MB
DEFAULT_MAX_LETTER = 25 * MB
MAX_FILES = 20
DEFAULT_MAX_PER_SENDER = DEFAULT_LETTERS_PER_SENDER
# What staff are shown of a letter they cannot answer through the desk.
NOTICE_SUBJECT = 200
NOTICE_LINES = 8
NOTICE_CHARS = 800


class Outcome(StrEnum):
    OPENED = "opened"
    ATTACHED = "attached"
    VERIFIED = "verified"
    CODE_REFUSED = "code_refused"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    BULK = "bulk"
    SPAM = "spam"
    QUARANTINED = "quarantined"
    DUPLICATE = "duplicate"
    RATE_LIMITED = Cap.SENDER.value
    CAPPED_MAILBOX = Cap.MAILBOX.value
    CAPPED_TOTAL = Cap.TOTAL.value
    TOO_LARGE = "too_large"
    SENDER_UNVERIFIED = "sender_unverified"


# Held back by a cap: kept raw, not answered.
_HELD = {Outcome.RATE_LIMITED, Outcome.CAPPED_MAILBOX, Outcome.CAPPED_TOTAL}
# What is not acted on is kept raw (encrypted) for staff; of a letter too large, its headers.
_KEPT = {Outcome.QUARANTINED, Outcome.TOO_LARGE, Outcome.SENDER_UNVERIFIED, *_HELD}

_RECORD_ONLY = {
    Disposition.AUTO_REPLY: Outcome.AUTO_REPLY,
    Disposition.BOUNCE: Outcome.BOUNCE,
    Disposition.BULK: Outcome.BULK,
    Disposition.SPAM: Outcome.SPAM,
}


@dataclass(frozen=True)
class IntakeResult:
    """What became of one letter."""

    outcome: Outcome
    reference: str | None = None
    reason: str | None = None
    kind: str | None = None
    language: str | None = None
    refused_files: tuple[str, ...] = ()
    request_id: int | None = None


class Quarantine(Exception):
    """The letter cannot be acted on: kept raw for staff."""


class _Plan(StrEnum):
    DUPLICATE = "duplicate"
    HELD = "held"  # held back by a cap
    QUARANTINE = "quarantine"
    RECORD = "record"  # the outcome is known already: a row (and notices) only
    OPEN = "open"  # a new request, opened with the rest of the batch
    ALONE = "alone"  # a reply: handled by itself once the letters before it are stored


@dataclass
class _Letter:
    """One letter of a batch on its way through :meth:`MailIntake.handle_batch`."""

    uid: int
    raw: bytes
    mail: ParsedMail | None
    plan: _Plan = _Plan.RECORD
    result: IntakeResult = field(default_factory=lambda: IntakeResult(Outcome.DUPLICATE))
    notify: bool = False  # held back: the first of the hour, staff are told
    opening: EmailOpening | None = None
    size: int | None = None  # too large: the letter's size; ``raw`` is its headers only
    ledger: Ledger | None = None  # the batch's caps (see mail.caps)
    counted: bool = False  # its answer goes to an unverified address: the caps count it
    answer: bool = False  # too large: the writer is told how to send it again


class MailIntake:
    """Turns raw letters into calls of the request service; see the module docstring."""

    def __init__(
        self,
        service: RequestService,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        clock: Clock,
        *,
        max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT,
        max_per_sender_per_hour: int = DEFAULT_MAX_PER_SENDER,
        classifier: KindClassifier | None = None,
        spam: SpamRules | None = None,
        authserv_id: str | None = None,
        max_acks_per_mailbox_per_hour: int = DEFAULT_ACKS_PER_MAILBOX,
        max_acks_per_hour: int = DEFAULT_ACKS_IN_TOTAL,
        max_letter_bytes: int = DEFAULT_MAX_LETTER,
    ) -> None:
        self._authserv_id = authserv_id or None
        self._service = service
        self._classifier = classifier or default_classifier()
        self._spam = spam or SpamRules()
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._max_attachment = max_attachment_bytes
        self._caps = Caps(
            letters_per_sender=max_per_sender_per_hour,
            acks_per_mailbox=max_acks_per_mailbox_per_hour,
            acks_in_total=max_acks_per_hour,
        )
        self._max_letter = max_letter_bytes

    async def seen(self, raw: bytes) -> bool:
        """Whether this letter (by Message-ID or content) was handled already."""
        return await self._known(parse_mail(raw).mail_key) is not None

    async def _known(self, key: str) -> str | None:
        async with self._sessions() as session:
            outcome = await session.scalar(
                select(InboundMail.outcome).where(InboundMail.mail_key == key)
            )
            return outcome

    async def handle(
        self, raw: bytes, *, folder: str = "INBOX", uidvalidity: int = 0, uid: int = 0
    ) -> IntakeResult:
        """Act on one letter once; a letter already handled is a ``duplicate``."""
        (result,) = await self.handle_batch([(uid, raw)], folder=folder, uidvalidity=uidvalidity)
        return result

    async def handle_batch(
        self,
        letters: Sequence[tuple[int, bytes]],
        *,
        folder: str = "INBOX",
        uidvalidity: int = 0,
        too_large: Mapping[int, int] | None = None,
    ) -> list[IntakeResult]:
        """Act on each ``(uid, raw)`` letter once; the outcomes in the same order.

        ``too_large`` maps the UIDs of letters over the size limit to their
        sizes: their ``raw`` is the headers alone. The batch's dedupe, caps
        and thread lookups take one query each (the caps three), and what its
        letters cause (requests, rows, notices) is stored in one transaction.
        A reply to a known request is handled by itself, after the letters
        before it are stored. When the batch cannot be stored, its letters are
        taken again one by one, so one bad letter is quarantined alone and the
        others are stored and answered once.
        """
        sizes = too_large or {}
        batch = [self._read(uid, raw, sizes.get(uid)) for uid, raw in letters]
        await self._plan(batch)
        pending: list[_Letter] = []
        for letter in batch:
            if letter.plan is _Plan.ALONE:
                await self._store(pending, folder, uidvalidity)
                pending = []
                letter.result = await self._alone(letter, folder, uidvalidity)
            elif letter.plan is not _Plan.DUPLICATE:
                pending.append(letter)
        await self._store(pending, folder, uidvalidity)
        return [letter.result for letter in batch]

    def _read(self, uid: int, raw: bytes, size: int | None = None) -> _Letter:
        try:
            return _Letter(uid, raw, parse_mail(raw), size=size)
        except Exception:  # parse_mail never raises; this is the last line of defence
            log.exception("mail uid %s: parser failed", uid)
            failed = IntakeResult(Outcome.QUARANTINED, reason="parser failed")
            return _Letter(uid, raw, None, _Plan.QUARANTINE, failed, size=size)

    # -- planning a batch --------------------------------------------------------------

    async def _plan(self, batch: list[_Letter]) -> None:
        """What becomes of each letter, decided from a few queries for the whole batch."""
        readable = [(letter, letter.mail) for letter in batch if letter.mail is not None]
        known = await self._known_keys({mail.mail_key for _, mail in readable})
        ledger = await self._ledger([mail for _, mail in readable])
        requests: list[tuple[_Letter, ParsedMail, Understanding]] = []
        for letter, mail in readable:
            letter.ledger = ledger
            if mail.mail_key in known:
                letter.plan = _Plan.DUPLICATE
                continue
            known.add(mail.mail_key)
            if letter.size is not None:
                continue  # too large: planned with the caps, below
            try:
                understood = self._understand(mail)
            except Quarantine as exc:
                letter.plan = _Plan.QUARANTINE
                letter.result = IntakeResult(Outcome.QUARANTINED, reason=str(exc))
                continue
            except Exception as exc:
                log.exception("mail uid %s: could not be handled", letter.uid)
                letter.plan = _Plan.QUARANTINE
                reason = f"could not be handled: {type(exc).__name__}"
                letter.result = IntakeResult(Outcome.QUARANTINED, reason=reason)
                continue
            if understood.disposition is not Disposition.REQUEST:
                outcome = _RECORD_ONLY[understood.disposition]
                letter.plan, letter.result = (
                    _Plan.RECORD,
                    IntakeResult(outcome, None, understood.reason),
                )
                continue
            if self._unverified(mail):
                letter.plan, letter.result = _Plan.RECORD, self._unverified_result
                continue
            requests.append((letter, mail, understood))
        if requests:
            await self._plan_requests(requests)
        for letter, mail in readable:
            if letter.plan is not _Plan.DUPLICATE:
                self._plan_caps(letter, mail, ledger)

    def _plan_caps(self, letter: _Letter, mail: ParsedMail, ledger: Ledger) -> None:
        """The caps, letter by letter in the batch's order, once each one's plan is known.

        Only now is it known which letters would open a request (and mail a
        code); a letter the answer caps hold back is not counted against its
        sender, so those caps are weighed together with the letter cap.
        """
        mailbox = self._index(mail)
        if mailbox is not None and (held := ledger.take_letter(mailbox)) is not None:
            self._hold(letter, held)
        elif letter.size is not None:
            self._plan_too_large(letter, mail)
        elif letter.plan is _Plan.OPEN and (held := self._may_answer(letter)) is not None:
            self._hold(letter, held)  # a new request would mail a code: not this hour

    async def _plan_requests(
        self, requests: list[tuple[_Letter, ParsedMail, Understanding]]
    ) -> None:
        wanted: set[str] = set()
        for _, mail, _ in requests:
            wanted.update(mail.thread_ids[-20:])
            wanted.add(self._external_id(mail))
        found = await self._service.references_for_messages(wanted)
        earlier: set[str] = set()  # Message-IDs of this batch's requests and replies so far
        for letter, mail, understood in requests:
            external_id = self._external_id(mail)
            done = found.get(external_id)
            thread = mail.thread_ids[-20:]
            if done is not None:
                # A crash after the service committed but before our row: the letter is there.
                reference, request_id = done
                letter.plan = _Plan.RECORD
                letter.result = IntakeResult(
                    Outcome.OPENED, reference, "recovered after a restart", request_id=request_id
                )
            elif understood.references or any(i in found or i in earlier for i in thread):
                letter.plan = _Plan.ALONE  # a reply: the service decides, request by request
            else:
                evidence, refused = self._evidence(mail.files)
                kind, candidates = self._kind(understood)
                assert mail.sender is not None  # _understand quarantines a letter without one
                letter.plan = _Plan.OPEN
                letter.opening = EmailOpening(
                    kind=kind,
                    language=understood.language,
                    fields=understood.fields,
                    email=mail.sender,
                    body=self._body(mail),
                    external_id=external_id,
                    evidence=evidence,
                    candidates=candidates,
                )
                letter.result = IntakeResult(
                    Outcome.OPENED,
                    None,
                    understood.reason,
                    kind.value,
                    understood.language,
                    refused,
                )
            earlier.add(external_id)

    async def _known_keys(self, keys: set[str]) -> set[str]:
        if not keys:
            return set()
        async with self._sessions() as session:
            rows = await session.scalars(
                select(InboundMail.mail_key).where(InboundMail.mail_key.in_(sorted(keys)))
            )
            return set(rows)

    async def _ledger(self, mails: list[ParsedMail]) -> Ledger:
        """The hour's counts of the batch's senders (see :mod:`mail.caps`)."""
        mailboxes = {index for index in map(self._index, mails) if index is not None}
        addresses = {index for index in map(self._address_index, mails) if index is not None}
        async with self._sessions() as session:
            return await read_ledger(session, self._caps, self._clock.now(), mailboxes, addresses)

    def _index(self, mail: ParsedMail) -> str | None:
        """The blind index of the sender's mailbox: what the caps count by (``sender_index``)."""
        if mail.sender is None:
            return None
        return self._vault.blind_index("email", mailbox_of(mail.sender))

    def _address_index(self, mail: ParsedMail) -> str | None:
        """The blind index of the sender's address as written: what a code verifies."""
        return self._vault.blind_index("email", mail.sender)

    def _may_answer(self, letter: _Letter) -> Held | None:
        """Count an answer to the letter's sender, or the cap that holds the letter back.

        A letter held back here was counted as acted on by the sender cap; it is
        given back, since a held letter is not one the desk acted on.
        """
        assert letter.mail is not None
        mailbox, ledger = self._index(letter.mail), letter.ledger
        if mailbox is None or ledger is None:
            return None
        address = self._address_index(letter.mail)
        held = ledger.take_answer(mailbox, address)
        if held is None:
            letter.counted = not ledger.verified(address)
        elif letter.size is None:
            ledger.give_back_letter(mailbox)
        return held

    def _hold(self, letter: _Letter, held: Held) -> None:
        letter.plan, letter.notify = _Plan.HELD, held.first
        limit = self._caps.limit(held.cap)
        reason = {
            Cap.SENDER: f"over {limit} letters an hour from this sender",
            Cap.MAILBOX: f"over {limit} answers an hour to this mailbox's unverified addresses",
            Cap.TOTAL: f"over {limit} answers an hour to unverified addresses",
        }[held.cap]
        letter.result = IntakeResult(Outcome(held.cap.value), reason=reason)

    def _plan_too_large(self, letter: _Letter, mail: ParsedMail) -> None:
        """Recorded by its headers; the writer is told when they are a person the caps allow."""
        letter.plan = _Plan.RECORD
        language = detect_language(mail.subject, mail.content_language)
        # An automatic letter is never answered (no mail loops); neither is a letter with
        # no address to answer.
        letter.answer = (
            mail.sender is not None and automatic(mail) is None and self._may_answer(letter) is None
        )
        reason = f"{letter.size} bytes, over {self._max_letter}"
        if not letter.answer:
            reason += "; not answered"
        letter.result = IntakeResult(Outcome.TOO_LARGE, reason=reason, language=language)

    # -- storing a batch ---------------------------------------------------------------

    async def _store(self, pending: list[_Letter], folder: str, uidvalidity: int) -> None:
        if not pending:
            return
        try:
            await self._store_together(pending, folder, uidvalidity)
        except Exception:
            log.warning(
                "%d letters could not be stored together; taking them one by one",
                len(pending),
                exc_info=True,
            )
            for letter in pending:
                letter.result = await self._one_by_one(letter, folder, uidvalidity)
            return
        for letter in pending:
            self._log(letter)

    async def _store_together(self, pending: list[_Letter], folder: str, uidvalidity: int) -> None:
        now = self._clock.now()
        openings = [letter for letter in pending if letter.plan is _Plan.OPEN]

        async def write(session: AsyncSession, views: list[RequestView]) -> None:
            for letter, view in zip(openings, views, strict=True):
                letter.result = replace(letter.result, reference=view.reference, request_id=view.id)
            rows = [self._row(letter, folder, uidvalidity, now) for letter in pending]
            made = await session.execute(
                insert(InboundMail).values(rows).returning(InboundMail.id, InboundMail.mail_key)
            )
            ids = {key: row_id for row_id, key in made.all()}  # the staff notices name the rows
            notices = [
                notice
                for letter, row in zip(pending, rows, strict=True)
                for notice in self._notices(letter, ids[row["mail_key"]], row["mail_key"])
            ]
            await enqueue_many(session, self._vault, now, notices)

        if openings:
            await self._service.open_by_email(
                [letter.opening for letter in openings if letter.opening is not None], within=write
            )
        else:
            async with self._sessions.begin() as session:
                await write(session, [])

    async def _one_by_one(self, letter: _Letter, folder: str, uidvalidity: int) -> IntakeResult:
        """A letter of a batch that could not be stored together, taken by itself."""
        if letter.plan is _Plan.QUARANTINE or letter.mail is None:
            return await self._quarantine(letter, folder, uidvalidity, letter.result.reason or "")
        if await self._known(letter.mail.mail_key) is not None:
            return IntakeResult(Outcome.DUPLICATE)
        if letter.plan is _Plan.HELD:
            return await self._held(letter, folder, uidvalidity)
        if letter.size is not None:  # too large: its planned outcome stands
            return await self._recorded(letter, folder, uidvalidity)
        return await self._alone(letter, folder, uidvalidity)

    async def _alone(self, letter: _Letter, folder: str, uidvalidity: int) -> IntakeResult:
        """One letter, acted on through the service and then recorded (replies, retries)."""
        assert letter.mail is not None

        def gate() -> IntakeResult | None:
            """Before a new request (and its code) comes of the letter: may it be answered?"""
            if letter.plan is _Plan.OPEN:
                return None  # counted when the batch was planned
            held = self._may_answer(letter)
            if held is None:
                return None
            self._hold(letter, held)
            return letter.result

        try:
            letter.result = await self._act(letter.mail, gate)
        except Quarantine as exc:
            return await self._quarantine(letter, folder, uidvalidity, str(exc))
        except Exception as exc:
            log.exception("mail uid %s: could not be handled", letter.uid)
            reason = f"could not be handled: {type(exc).__name__}"
            return await self._quarantine(letter, folder, uidvalidity, reason)
        if not await self._record(letter, folder, uidvalidity):
            log.info("mail uid %s was recorded meanwhile", letter.uid)
        self._log(letter)
        return letter.result

    def _log(self, letter: _Letter) -> None:
        result, sender = letter.result, letter.mail.sender if letter.mail else None
        if result.outcome is Outcome.QUARANTINED:
            log.warning("mail uid %s quarantined: %s", letter.uid, result.reason)
        elif result.outcome in _HELD:
            log.info(
                "mail uid %s from %s: held back (%s)",
                letter.uid,
                mask_email(sender),
                result.outcome.value,
            )
        else:
            log.info(
                "mail uid %s from %s: %s %s (%s)",
                letter.uid,
                mask_email(sender),
                result.outcome.value,
                result.reference or "",
                result.reason or "",
            )

    # -- deciding -----------------------------------------------------------------

    def _unverified(self, mail: ParsedMail) -> bool:
        """Our mail server says the From address is not the sender's (see the docstring)."""
        return dmarc_failed(mail.authentication_results, self._authserv_id)

    @property
    def _unverified_result(self) -> IntakeResult:
        return IntakeResult(Outcome.SENDER_UNVERIFIED, reason=f"dmarc=fail at {self._authserv_id}")

    def _understand(self, mail: ParsedMail) -> Understanding:
        if mail.sender is None:
            if "no From header" in mail.problems:
                raise Quarantine("no From header")
            raise Quarantine("no usable sender address")
        return understand(mail, classifier=self._classifier, spam=self._spam)

    @staticmethod
    def _kind(understood: Understanding) -> tuple[RequestKind, tuple[RequestKind, ...]]:
        """The kind a new request opens as: ``unclassified`` with its likely kinds when unsure."""
        if understood.kind is not None:
            return understood.kind, ()
        return RequestKind.UNCLASSIFIED, understood.candidates

    @staticmethod
    def _external_id(mail: ParsedMail) -> str:
        return mail.message_id or f"<{mail.mail_key[:40]}@inbound.aina-dsr.invalid>"

    async def _act(
        self, mail: ParsedMail, gate: Callable[[], IntakeResult | None] | None = None
    ) -> IntakeResult:
        understood = self._understand(mail)
        if understood.disposition is not Disposition.REQUEST:
            return IntakeResult(_RECORD_ONLY[understood.disposition], reason=understood.reason)
        if self._unverified(mail):
            return self._unverified_result
        assert mail.sender is not None  # _understand quarantines a letter without one
        external_id = self._external_id(mail)
        # A crash after the service committed but before our row: the letter is there already.
        done = (await self._service.references_for_messages([external_id])).get(external_id)
        if done is not None:
            reference, request_id = done
            return IntakeResult(
                Outcome.OPENED, reference, "recovered after a restart", request_id=request_id
            )
        evidence, refused = self._evidence(mail.files)
        actor = Actor.person_email(mail.sender)
        for reference in await self._thread_candidates(mail, understood):
            result = await self._reply(reference, mail, understood, actor, external_id, evidence)
            if result is not None:
                return self._with_refused(result, refused, understood)
        held = gate() if gate is not None else None
        if held is not None:
            return held
        kind, candidates = self._kind(understood)
        view = await self._service.open_request(
            kind=kind,
            candidates=candidates,
            channel=Channel.EMAIL,
            language=understood.language,
            fields=understood.fields,
            email=mail.sender,
            body=self._body(mail),
            external_id=external_id,
            evidence=evidence,
            send_code_to_email=True,
        )
        result = IntakeResult(
            Outcome.OPENED, view.reference, understood.reason, kind.value, request_id=view.id
        )
        return self._with_refused(result, refused, understood)

    def _with_refused(
        self, result: IntakeResult, refused: tuple[str, ...], understood: Understanding
    ) -> IntakeResult:
        return replace(result, language=understood.language, refused_files=refused)

    async def _thread_candidates(self, mail: ParsedMail, understood: Understanding) -> list[str]:
        found: list[str] = []
        for message_id in reversed(mail.thread_ids[-20:]):
            reference = await self._service.reference_for_message(message_id)
            if reference is not None and reference not in found:
                found.append(reference)
        # A reference in the subject counts only from the request's own sender (checked
        # by the service, which refuses anyone else).
        found.extend(r for r in understood.references[:5] if r not in found)
        return found

    async def _reply(
        self,
        reference: str,
        mail: ParsedMail,
        understood: Understanding,
        actor: Actor,
        external_id: str,
        evidence: list[Evidence],
    ) -> IntakeResult | None:
        try:
            view = await self._service.get(reference)
        except RequestNotFound:
            return None
        # Whatever the request's status, the reply is kept with it and staff read its own
        # words (the subject when there are none: "not me!" may be all a person writes).
        words = mail.text.strip() or mail.subject
        try:
            if view.status == Status.AWAITING_VERIFICATION.value and understood.codes:
                outcome = CodeOutcome.WRONG
                for code in understood.codes[:3]:
                    check = await self._service.verify_by_code(reference, code, actor)
                    outcome = check.outcome
                    if outcome is CodeOutcome.OK:
                        break
                verified = outcome is CodeOutcome.OK
                fields = self._missing_only(view, understood.fields)
                if evidence or fields or not self._only_codes(mail.text, understood.codes):
                    await self._service.attach(
                        reference,
                        actor,
                        body=self._body(mail),
                        external_id=external_id,
                        evidence=evidence,
                        fields=fields,
                        words=words,
                    )
                if verified:
                    return IntakeResult(
                        Outcome.VERIFIED, reference, "code matched", request_id=view.id
                    )
                return IntakeResult(
                    Outcome.CODE_REFUSED, reference, f"code {outcome.value}", request_id=view.id
                )
            await self._service.attach(
                reference,
                actor,
                body=self._body(mail),
                external_id=external_id,
                evidence=evidence,
                fields=self._missing_only(view, understood.fields) if view.is_open else {},
                words=words,
            )
        except NotAllowed:
            log.info(
                "mail from %s names %s, which is not theirs", mask_email(actor.email), reference
            )
            return None
        except IllegalTransition:
            return None
        return IntakeResult(Outcome.ATTACHED, reference, "reply", request_id=view.id)

    @staticmethod
    def _missing_only(view: RequestView, fields: dict[str, Any]) -> dict[str, Any]:
        wanted = {name for group in view.missing_fields for name in group.split("|")}
        return {name: value for name, value in fields.items() if name in wanted}

    @staticmethod
    def _only_codes(text: str, codes: tuple[str, ...]) -> bool:
        rest = text
        for code in codes:
            rest = rest.replace(code, "").replace(f"{code[:3]} {code[3:]}", "")
        return len("".join(ch for ch in rest if ch.isalnum())) < 40

    @staticmethod
    def _body(mail: ParsedMail) -> str:
        return f"{mail.subject}\n\n{mail.text}".strip()

    def _evidence(self, files: tuple[MailFile, ...]) -> tuple[list[Evidence], tuple[str, ...]]:
        kept: list[Evidence] = []
        refused: list[str] = []
        for item in files:
            if len(item.data) > self._max_attachment or len(kept) >= MAX_FILES:
                refused.append(item.filename)
                continue
            if not item.data:
                continue
            kept.append(Evidence(item.filename, item.content_type, item.data))
        return kept, tuple(refused)

    # -- recording ----------------------------------------------------------------

    async def _held(self, letter: _Letter, folder: str, uidvalidity: int) -> IntakeResult:
        """Keep the letter for staff, unanswered; tell staff on the first of the hour."""
        assert letter.mail is not None
        cap = Cap(letter.result.outcome.value)
        async with self._sessions() as session:
            told = await told_already(session, cap, self._index(letter.mail), self._clock.now())
        letter.notify = not told
        return await self._recorded(letter, folder, uidvalidity)

    async def _recorded(self, letter: _Letter, folder: str, uidvalidity: int) -> IntakeResult:
        """The planned outcome, recorded by itself."""
        if not await self._record(letter, folder, uidvalidity):
            return IntakeResult(Outcome.DUPLICATE)
        self._log(letter)
        return letter.result

    async def _quarantine(
        self, letter: _Letter, folder: str, uidvalidity: int, reason: str
    ) -> IntakeResult:
        letter.plan = _Plan.QUARANTINE
        letter.result = IntakeResult(Outcome.QUARANTINED, reason=reason)
        if not await self._record(letter, folder, uidvalidity):
            return IntakeResult(Outcome.DUPLICATE)
        self._log(letter)
        return letter.result

    async def _record(self, letter: _Letter, folder: str, uidvalidity: int) -> bool:
        """The letter's row and notices in a transaction of their own; ``False``: known already."""
        now = self._clock.now()
        try:
            async with self._sessions.begin() as session:
                row = self._row(letter, folder, uidvalidity, now)
                row_id = await session.scalar(
                    insert(InboundMail).values(row).returning(InboundMail.id)
                )
                assert row_id is not None
                notices = self._notices(letter, row_id, row["mail_key"])
                await enqueue_many(session, self._vault, now, notices)
        except IntegrityError:
            return False
        return True

    def _row(self, letter: _Letter, folder: str, uidvalidity: int, now: datetime) -> dict[str, Any]:
        """The letter's ``inbound_mail`` row."""
        mail, result = letter.mail, letter.result
        kept = result.outcome in _KEPT
        answered = result.outcome is Outcome.OPENED or (
            result.outcome is Outcome.TOO_LARGE and letter.answer
        )
        return {
            "mail_key": mail.mail_key if mail is not None else mail_key(letter.raw, None),
            "folder": folder[:255],
            "uidvalidity": uidvalidity,
            "uid": letter.uid,
            "outcome": result.outcome.value,
            "reason": (result.reason or "")[:500] or None,
            "request_id": result.request_id,
            "sender_index": self._index(mail) if mail is not None else None,
            "answered_unverified": letter.counted and answered,
            "raw_enc": self._vault.encrypt_bytes(letter.raw) if kept else None,
            "received_at": now,
            "processed_at": now,
        }

    def _notices(self, letter: _Letter, row_id: int, key: str) -> list[NewMessage]:
        """What the letter's row makes the desk say: to staff, or about refused files."""
        result, sender = letter.result, letter.mail.sender if letter.mail else None
        if result.outcome is Outcome.QUARANTINED:
            reason = (result.reason or "")[:200]
            return [_to_staff(key, "quarantined", {"mail_id": row_id, "reason": reason})]
        if result.outcome is Outcome.SENDER_UNVERIFIED and letter.mail is not None:
            return [_to_staff(key, "sender_unverified", _shown(letter.mail, row_id))]
        if result.outcome in _HELD:
            if not letter.notify:
                return []
            cap = Cap(result.outcome.value)
            params: dict[str, object] = {"mail_id": row_id, "limit": self._caps.limit(cap)}
            if cap is not Cap.TOTAL:
                params["sender"] = mask_email(sender)
            return [_to_staff(key, cap.value, params)]
        if result.outcome is Outcome.TOO_LARGE:
            return self._too_large_notices(letter, row_id, key)
        if result.refused_files and result.reference is not None and sender:
            return [
                NewMessage(
                    key=f"mail/{key}/attachments_refused",
                    channel=Channel.EMAIL,
                    audience=Audience.SUBJECT,
                    template="attachment_refused",
                    language=result.language or "en",
                    params={
                        "reference": result.reference,
                        "files": ", ".join(result.refused_files)[:500],
                        "limit_mb": max(1, self._max_attachment // (1024 * 1024)),
                    },
                    address=sender,
                    request_id=result.request_id,
                )
            ]
        return []

    def _too_large_notices(self, letter: _Letter, row_id: int, key: str) -> list[NewMessage]:
        """Staff are told of a letter too large to take; its writer, when allowed, how to resend."""
        mail, language = letter.mail, letter.result.language or "en"
        sender = mail.sender if mail is not None else None
        sizes = {
            "size_mb": max(1, round((letter.size or 0) / MB)),
            "limit_mb": max(1, self._max_letter // MB),
        }
        what = "too_large" if letter.answer else "too_large_unanswered"
        staff = _to_staff(
            key,
            what,
            {
                "mail_id": row_id,
                "sender": mask_email(sender) or "?",
                "subject": (mail.subject if mail is not None else "")[:200],
                **sizes,
            },
        )
        if not letter.answer or not sender:
            return [staff]
        note = NewMessage(
            key=f"mail/{key}/resend_smaller",
            channel=Channel.EMAIL,
            audience=Audience.SUBJECT,
            template="mail_too_large",
            language=language,
            params={
                "reference": None,
                "attachment_mb": max(1, self._max_attachment // MB),
                "in_reply_to": mail.message_id if mail is not None else None,
                **sizes,
            },
            address=sender,
        )
        return [staff, note]


def _shown(mail: ParsedMail, row_id: int) -> dict[str, object]:
    """What staff see of a letter nobody answered: masked sender, subject, first lines."""
    lines = [line.strip() for line in mail.text.split("\n") if line.strip()][:NOTICE_LINES]
    first = "\n".join(lines)
    if len(first) > NOTICE_CHARS:
        first = first[: NOTICE_CHARS - 1].rstrip() + "…"
    return {
        "mail_id": row_id,
        "sender": mask_email(mail.sender),
        "subject": mail.subject[:NOTICE_SUBJECT] or "—",
        "lines": first or "—",
    }


def _to_staff(key: str, what: str, params: dict[str, object]) -> NewMessage:
    """A notice to the staff group about a letter that opened no request."""
    return NewMessage(
        key=f"mail/{key}/{what}",
        channel=Channel.TELEGRAM,
        audience=Audience.STAFF_GROUP,
        template=f"staff_mail_{what}",
        language="en",
        params={"reference": None, **params},
    )
