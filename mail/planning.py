"""A batch of letters planned: what becomes of each, decided from a few queries for them all.

The batch's dedupe, thread lookups and caps take one query each (the caps
three, see :mod:`workflows.requests.mail_caps`), all in one session. A letter that opens a
request is opened with the rest of the batch; a reply waits to be handled by
itself; the caps are weighed last, letter by letter in the batch's order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum

from mail.handling import LetterHandler, body_of, evidence_of, external_id_of, kind_of
from mail.outcomes import RECORD_ONLY, IntakeResult, Outcome, Quarantine
from mail.parsing import ParsedMail
from mail.understanding import Disposition, Understanding, automatic, detect_language
from workflows.identity import mailbox_of
from workflows.privacy.vault import Vault
from workflows.requests.inbound_mail import BatchLookup, InboundMailLog
from workflows.requests.intake import EmailOpening
from workflows.requests.mail_caps import Cap, Caps, Held, Ledger

log = logging.getLogger(__name__)


class Plan(StrEnum):
    """What becomes of a letter of a batch."""

    DUPLICATE = "duplicate"
    HELD = "held"  # held back by a cap
    QUARANTINE = "quarantine"
    RECORD = "record"  # the outcome is known already: a row (and notices) only
    OPEN = "open"  # a new request, opened with the rest of the batch
    ALONE = "alone"  # a reply: handled by itself once the letters before it are stored


@dataclass
class Letter:
    """One letter of a batch on its way through :meth:`mail.intake.MailIntake.handle_batch`."""

    uid: int
    raw: bytes
    mail: ParsedMail | None
    plan: Plan = Plan.RECORD
    result: IntakeResult = field(default_factory=lambda: IntakeResult(Outcome.DUPLICATE))
    notify: bool = False  # held back: the first of the hour, staff are told
    opening: EmailOpening | None = None
    size: int | None = None  # too large: the letter's size; ``raw`` is its headers only
    ledger: Ledger | None = None  # the batch's caps (see workflows.requests.mail_caps)
    counted: bool = False  # its answer goes to an unverified address: the caps count it
    answer: bool = False  # too large: the writer is told how to send it again


class BatchPlanner:
    """Plans the letters of a batch; the intake then stores them (see :mod:`mail.intake`)."""

    def __init__(
        self,
        letters: LetterHandler,
        inbound: InboundMailLog,
        vault: Vault,
        caps: Caps,
        *,
        max_attachment: int,
        max_letter: int,
    ) -> None:
        self._letters = letters
        self._inbound = inbound
        self._vault = vault
        self._caps = caps
        self._max_attachment = max_attachment
        self._max_letter = max_letter

    async def plan(self, batch: list[Letter]) -> None:
        """What becomes of each letter, decided from a few queries for the whole batch."""
        readable = [(letter, letter.mail) for letter in batch if letter.mail is not None]
        lookup = await self._look_up([mail for _, mail in readable])
        known, ledger = lookup.known, lookup.ledger
        requests: list[tuple[Letter, ParsedMail, Understanding]] = []
        for letter, mail in readable:
            letter.ledger = ledger
            if mail.mail_key in known:
                letter.plan = Plan.DUPLICATE
                continue
            known.add(mail.mail_key)
            if letter.size is not None:
                continue  # too large: planned with the caps, below
            try:
                understood = self._letters.understand(mail)
            except Quarantine as exc:
                letter.plan = Plan.QUARANTINE
                letter.result = IntakeResult(Outcome.QUARANTINED, reason=str(exc))
                continue
            except Exception as exc:
                log.exception("mail uid %s: could not be handled", letter.uid)
                letter.plan = Plan.QUARANTINE
                reason = f"could not be handled: {type(exc).__name__}"
                letter.result = IntakeResult(Outcome.QUARANTINED, reason=reason)
                continue
            if understood.disposition is not Disposition.REQUEST:
                outcome = RECORD_ONLY[understood.disposition]
                letter.plan, letter.result = (
                    Plan.RECORD,
                    IntakeResult(outcome, None, understood.reason),
                )
                continue
            if self._letters.unverified(mail):
                letter.plan, letter.result = Plan.RECORD, self._letters.unverified_result()
                continue
            requests.append((letter, mail, understood))
        if requests:
            self._plan_requests(requests, lookup.requests)
        for letter, mail in readable:
            if letter.plan is not Plan.DUPLICATE:
                self._plan_caps(letter, mail, ledger)

    def _plan_caps(self, letter: Letter, mail: ParsedMail, ledger: Ledger) -> None:
        """The caps, letter by letter in the batch's order, once each one's plan is known.

        Only now is it known which letters would open a request (and mail a
        code); a letter the answer caps hold back is not counted against its
        sender, so those caps are weighed together with the letter cap.
        """
        mailbox = self.index(mail)
        if mailbox is not None and (held := ledger.take_letter(mailbox)) is not None:
            self.hold(letter, held)
        elif letter.size is not None:
            self._plan_too_large(letter, mail)
        elif letter.plan is Plan.OPEN and (held := self.may_answer(letter)) is not None:
            self.hold(letter, held)  # a new request would mail a code: not this hour

    def _plan_requests(
        self,
        requests: list[tuple[Letter, ParsedMail, Understanding]],
        found: dict[str, tuple[str, int]],
    ) -> None:
        """``found``: the requests the letters' Message-IDs and threads name (reference, id)."""
        earlier: set[str] = set()  # Message-IDs of this batch's requests and replies so far
        for letter, mail, understood in requests:
            external_id = external_id_of(mail)
            done = found.get(external_id)
            thread = mail.thread_ids[-20:]
            if done is not None:
                # A crash after the service committed but before our row: the letter is there.
                reference, request_id = done
                letter.plan = Plan.RECORD
                letter.result = IntakeResult(
                    Outcome.OPENED, reference, "recovered after a restart", request_id=request_id
                )
            elif understood.references or any(i in found or i in earlier for i in thread):
                letter.plan = Plan.ALONE  # a reply: the service decides, request by request
            else:
                evidence, refused = evidence_of(mail.files, self._max_attachment)
                kind, candidates = kind_of(understood)
                assert mail.sender is not None  # understand() quarantines a letter without one
                letter.plan = Plan.OPEN
                letter.opening = EmailOpening(
                    kind=kind,
                    language=understood.language,
                    fields=understood.fields,
                    email=mail.sender,
                    body=body_of(mail),
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

    async def _look_up(self, mails: list[ParsedMail]) -> BatchLookup:
        """Which letters are known already, the hour's counts of their senders (see
        workflows.requests.mail_caps) and the requests their threads name, in one read.

        The threads are looked up for every letter (only those that would open
        a request need them, but which ones is known only once they are read).
        """
        mailboxes = {index for index in map(self.index, mails) if index is not None}
        addresses = {index for index in map(self.address_index, mails) if index is not None}
        keys = [mail.mail_key for mail in mails]
        threads: set[str] = set()
        for mail in mails:
            threads.update(mail.thread_ids[-20:])
            threads.add(external_id_of(mail))
        return await self._inbound.look_up(keys, self._caps, (mailboxes, addresses), threads)

    def index(self, mail: ParsedMail) -> str | None:
        """The blind index of the sender's mailbox: what the caps count by (``sender_index``)."""
        if mail.sender is None:
            return None
        return self._vault.blind_index("email", mailbox_of(mail.sender))

    def address_index(self, mail: ParsedMail) -> str | None:
        """The blind index of the sender's address as written: what a code verifies."""
        return self._vault.blind_index("email", mail.sender)

    def may_answer(self, letter: Letter) -> Held | None:
        """Count an answer to the letter's sender, or the cap that holds the letter back.

        A letter held back here was counted as acted on by the sender cap; it is
        given back, since a held letter is not one the desk acted on.
        """
        assert letter.mail is not None
        mailbox, ledger = self.index(letter.mail), letter.ledger
        if mailbox is None or ledger is None:
            return None
        address = self.address_index(letter.mail)
        held = ledger.take_answer(mailbox, address)
        if held is None:
            letter.counted = not ledger.verified(address)
        elif letter.size is None:
            ledger.give_back_letter(mailbox)
        return held

    def hold(self, letter: Letter, held: Held) -> None:
        """The letter is held back by ``held``: kept, unanswered, staff told on the first."""
        letter.plan, letter.notify = Plan.HELD, held.first
        limit = self._caps.limit(held.cap)
        reason = {
            Cap.SENDER: f"over {limit} letters an hour from this sender",
            Cap.MAILBOX: f"over {limit} answers an hour to this mailbox's unverified addresses",
            Cap.TOTAL: f"over {limit} answers an hour to unverified addresses",
        }[held.cap]
        letter.result = IntakeResult(Outcome(held.cap.value), reason=reason)

    def _plan_too_large(self, letter: Letter, mail: ParsedMail) -> None:
        """Recorded by its headers; the writer is told when they are a person the caps allow."""
        letter.plan = Plan.RECORD
        language = detect_language(mail.subject, mail.content_language)
        # An automatic letter is never answered (no mail loops); neither is a letter with
        # no address to answer.
        letter.answer = (
            mail.sender is not None and automatic(mail) is None and self.may_answer(letter) is None
        )
        reason = f"{letter.size} bytes, over {self._max_letter}"
        if not letter.answer:
            reason += "; not answered"
        letter.result = IntakeResult(Outcome.TOO_LARGE, reason=reason, language=language)
