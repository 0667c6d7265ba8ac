"""One letter in, one outcome: a new request, a reply on a known one, or a record only.

Every letter gets one ``inbound_mail`` row (see
:mod:`workflows.requests.inbound_mail`), keyed by its Message-ID (or its
content), so a letter seen twice is handled once. The row is written after the
request service has committed what the letter caused; a crash in between is
caught on the next pass, because the service recorded the letter's
Message-ID with the request (see :meth:`MailIntake.handle`).

Caps protect the people whose addresses a letter may name (see
:mod:`workflows.requests.mail_caps`): one mailbox (plus-tags and case folded)
gets at most ``max_per_sender_per_hour`` letters acted on in an hour, and
acknowledgements to addresses nobody has verified are capped per mailbox and
in total. A letter a cap holds back is kept, raw and encrypted, with the cap's
outcome (``rate_limited``, ``capped_mailbox``, ``capped_total``): not
answered, never lost, and staff are told once per cap and hour (per mailbox
for the first two).

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
from collections.abc import Mapping, Sequence
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.classifier import KindClassifier, default_classifier
from mail.handling import LetterHandler
from mail.notices import Limits, Recorded, notices_for
from mail.outcomes import HELD, KEPT, IntakeResult, Outcome, Quarantine
from mail.parsing import mail_key, parse_mail
from mail.planning import BatchPlanner, Letter, Plan
from mail.settings import DEFAULT_MAX_ATTACHMENT, DEFAULT_MAX_LETTER
from mail.spam import SpamRules
from workflows.clock import Clock
from workflows.outbox.queue import NewMessage
from workflows.privacy.masking import mask_email
from workflows.privacy.vault import Vault
from workflows.requests.inbound_mail import InboundMailLog, InboundRecord
from workflows.requests.mail_caps import (
    DEFAULT_ACKS_IN_TOTAL,
    DEFAULT_ACKS_PER_MAILBOX,
    DEFAULT_LETTERS_PER_SENDER,
    Cap,
    Caps,
)
from workflows.requests.service import RequestService
from workflows.snapshots import RequestView

log = logging.getLogger(__name__)


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
        max_per_sender_per_hour: int = DEFAULT_LETTERS_PER_SENDER,
        classifier: KindClassifier | None = None,
        spam: SpamRules | None = None,
        authserv_id: str | None = None,
        max_acks_per_mailbox_per_hour: int = DEFAULT_ACKS_PER_MAILBOX,
        max_acks_per_hour: int = DEFAULT_ACKS_IN_TOTAL,
        max_letter_bytes: int = DEFAULT_MAX_LETTER,
    ) -> None:
        self._service = service
        self._letters = LetterHandler(
            service,
            classifier or default_classifier(),
            spam or SpamRules(),
            authserv_id or None,
            max_attachment_bytes,
        )
        self._inbound = InboundMailLog(sessions, vault, clock)
        caps = Caps(
            letters_per_sender=max_per_sender_per_hour,
            acks_per_mailbox=max_acks_per_mailbox_per_hour,
            acks_in_total=max_acks_per_hour,
        )
        self._planner = BatchPlanner(
            self._letters,
            self._inbound,
            vault,
            caps,
            max_attachment=max_attachment_bytes,
            max_letter=max_letter_bytes,
        )
        self._limits = Limits(caps, max_attachment_bytes, max_letter_bytes)

    async def seen(self, raw: bytes) -> bool:
        """Whether this letter (by Message-ID or content) was handled already."""
        return await self._inbound.outcome_of(parse_mail(raw).mail_key) is not None

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
        await self._planner.plan(batch)
        pending: list[Letter] = []
        for letter in batch:
            if letter.plan is Plan.ALONE:
                await self._store(pending, folder, uidvalidity)
                pending = []
                letter.result = await self._alone(letter, folder, uidvalidity)
            elif letter.plan is not Plan.DUPLICATE:
                pending.append(letter)
        await self._store(pending, folder, uidvalidity)
        return [letter.result for letter in batch]

    def _read(self, uid: int, raw: bytes, size: int | None = None) -> Letter:
        try:
            return Letter(uid, raw, parse_mail(raw), size=size)
        except Exception:  # parse_mail never raises; this is the last line of defence
            log.exception("mail uid %s: parser failed", uid)
            failed = IntakeResult(Outcome.QUARANTINED, reason="parser failed")
            return Letter(uid, raw, None, Plan.QUARANTINE, failed, size=size)

    # -- storing a batch ---------------------------------------------------------------

    async def _store(self, pending: list[Letter], folder: str, uidvalidity: int) -> None:
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

    async def _store_together(self, pending: list[Letter], folder: str, uidvalidity: int) -> None:
        openings = [letter for letter in pending if letter.plan is Plan.OPEN]

        def notices(place: int, row_id: int) -> list[NewMessage]:
            return self._notices(pending[place], row_id)

        async def write(session: AsyncSession, views: list[RequestView]) -> None:
            for letter, view in zip(openings, views, strict=True):
                letter.result = replace(letter.result, reference=view.reference, request_id=view.id)
            records = [self._record_of(letter, folder, uidvalidity) for letter in pending]
            await self._inbound.write(session, records, notices)

        if openings:
            await self._service.open_by_email(
                [letter.opening for letter in openings if letter.opening is not None], within=write
            )
        else:
            records = [self._record_of(letter, folder, uidvalidity) for letter in pending]
            await self._inbound.record_all(records, notices)

    async def _one_by_one(self, letter: Letter, folder: str, uidvalidity: int) -> IntakeResult:
        """A letter of a batch that could not be stored together, taken by itself."""
        if letter.plan is Plan.QUARANTINE or letter.mail is None:
            return await self._quarantine(letter, folder, uidvalidity, letter.result.reason or "")
        if await self._inbound.outcome_of(letter.mail.mail_key) is not None:
            return IntakeResult(Outcome.DUPLICATE)
        if letter.plan is Plan.HELD:
            return await self._held(letter, folder, uidvalidity)
        if letter.size is not None:  # too large: its planned outcome stands
            return await self._recorded(letter, folder, uidvalidity)
        return await self._alone(letter, folder, uidvalidity)

    async def _alone(self, letter: Letter, folder: str, uidvalidity: int) -> IntakeResult:
        """One letter, acted on through the service and then recorded (replies, retries)."""
        assert letter.mail is not None

        def gate() -> IntakeResult | None:
            """Before a new request (and its code) comes of the letter: may it be answered?"""
            if letter.plan is Plan.OPEN:
                return None  # counted when the batch was planned
            held = self._planner.may_answer(letter)
            if held is None:
                return None
            self._planner.hold(letter, held)
            return letter.result

        try:
            letter.result = await self._letters.act(letter.mail, gate)
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

    def _log(self, letter: Letter) -> None:
        result, sender = letter.result, letter.mail.sender if letter.mail else None
        if result.outcome is Outcome.QUARANTINED:
            log.warning("mail uid %s quarantined: %s", letter.uid, result.reason)
        elif result.outcome in HELD:
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

    # -- recording ----------------------------------------------------------------

    async def _held(self, letter: Letter, folder: str, uidvalidity: int) -> IntakeResult:
        """Keep the letter for staff, unanswered; tell staff on the first of the hour."""
        assert letter.mail is not None
        cap = Cap(letter.result.outcome.value)
        told = await self._inbound.told_already(cap, self._planner.index(letter.mail))
        letter.notify = not told
        return await self._recorded(letter, folder, uidvalidity)

    async def _recorded(self, letter: Letter, folder: str, uidvalidity: int) -> IntakeResult:
        """The planned outcome, recorded by itself."""
        if not await self._record(letter, folder, uidvalidity):
            return IntakeResult(Outcome.DUPLICATE)
        self._log(letter)
        return letter.result

    async def _quarantine(
        self, letter: Letter, folder: str, uidvalidity: int, reason: str
    ) -> IntakeResult:
        letter.plan = Plan.QUARANTINE
        letter.result = IntakeResult(Outcome.QUARANTINED, reason=reason)
        if not await self._record(letter, folder, uidvalidity):
            return IntakeResult(Outcome.DUPLICATE)
        self._log(letter)
        return letter.result

    async def _record(self, letter: Letter, folder: str, uidvalidity: int) -> bool:
        """The letter's row and notices in a transaction of their own; ``False``: known already."""
        record = self._record_of(letter, folder, uidvalidity)
        return await self._inbound.record(record, lambda _, row_id: self._notices(letter, row_id))

    def _record_of(self, letter: Letter, folder: str, uidvalidity: int) -> InboundRecord:
        """The letter's ``inbound_mail`` row."""
        mail, result = letter.mail, letter.result
        answered = result.outcome is Outcome.OPENED or (
            result.outcome is Outcome.TOO_LARGE and letter.answer
        )
        return InboundRecord(
            mail_key=self._key(letter),
            folder=folder,
            uidvalidity=uidvalidity,
            uid=letter.uid,
            outcome=result.outcome.value,
            reason=result.reason,
            request_id=result.request_id,
            sender_index=self._planner.index(mail) if mail is not None else None,
            answered_unverified=letter.counted and answered,
            raw=letter.raw if result.outcome in KEPT else None,
        )

    def _notices(self, letter: Letter, row_id: int) -> list[NewMessage]:
        """What the letter's row makes the desk say (see :mod:`mail.notices`)."""
        recorded = Recorded(letter.result, letter.mail, letter.notify, letter.size, letter.answer)
        return notices_for(recorded, row_id, self._key(letter), self._limits)

    @staticmethod
    def _key(letter: Letter) -> str:
        return letter.mail.mail_key if letter.mail is not None else mail_key(letter.raw, None)
