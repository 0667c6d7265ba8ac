"""One letter in, one outcome: a new request, a reply on a known one, or a record only.

Every letter gets one ``inbound_mail`` row, keyed by its Message-ID (or its
content), so a letter seen twice is handled once. The row is written after the
request service has committed what the letter caused; a crash in between is
caught on the next pass, because the service recorded the letter's
Message-ID with the request (see :meth:`MailIntake.handle`).

One sender gets at most ``max_per_sender_per_hour`` letters acted on in an
hour (counted from ``inbound_mail`` by the sender's blind index, so every
process and every restart sees the same count). The rest are kept, raw and
encrypted, with the outcome ``rate_limited``: not answered, never lost, and
staff are told once per sender and hour.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mail.parsing import MailFile, ParsedMail, mail_key, parse_mail
from mail.understanding import Disposition, Understanding, understand
from workflows.clock import Clock
from workflows.errors import IllegalTransition, NotAllowed, RequestNotFound
from workflows.identity import CodeOutcome
from workflows.kinds import RequestKind
from workflows.masking import mask_email
from workflows.outbox import Audience, Channel, enqueue
from workflows.service import Evidence, RequestService
from workflows.states import Status
from workflows.tables import InboundMail
from workflows.vault import Vault
from workflows.views import Actor, RequestView

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTACHMENT = 10 * 1024 * 1024
MAX_FILES = 20
DEFAULT_MAX_PER_SENDER = 20
SENDER_WINDOW = timedelta(hours=1)


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
    RATE_LIMITED = "rate_limited"


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


class Quarantine(Exception):
    """The letter cannot be acted on: kept raw for staff."""


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
    ) -> None:
        self._service = service
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._max_attachment = max_attachment_bytes
        self._max_per_sender = max_per_sender_per_hour

    async def seen(self, raw: bytes) -> bool:
        """Whether this letter (by Message-ID or content) was handled already."""
        return await self._known(parse_mail(raw).mail_key) is not None

    async def _known(self, key: str) -> str | None:
        async with self._sessions() as session:
            outcome = await session.scalar(
                select(InboundMail.outcome).where(InboundMail.mail_key == key)
            )
            return outcome

    async def handle_batch(
        self, letters: Sequence[tuple[int, bytes]], *, folder: str = "INBOX", uidvalidity: int = 0
    ) -> list[IntakeResult]:
        """Act on ``(uid, raw)`` letters once each; the outcomes in the same order."""
        return [
            await self.handle(raw, folder=folder, uidvalidity=uidvalidity, uid=uid)
            for uid, raw in letters
        ]

    async def handle(
        self, raw: bytes, *, folder: str = "INBOX", uidvalidity: int = 0, uid: int = 0
    ) -> IntakeResult:
        """Act on one letter once; a letter already handled is a ``duplicate``."""
        try:
            mail = parse_mail(raw)
        except Exception:  # parse_mail never raises; this is the last line of defence
            log.exception("mail uid %s: parser failed", uid)
            return await self._quarantine(raw, None, folder, uidvalidity, uid, "parser failed")
        if await self._known(mail.mail_key) is not None:
            return IntakeResult(Outcome.DUPLICATE)
        if await self._over_sender_limit(mail):
            return await self._rate_limited(raw, mail, folder, uidvalidity, uid)
        try:
            result = await self._act(mail)
        except Quarantine as exc:
            return await self._quarantine(raw, mail, folder, uidvalidity, uid, str(exc))
        except Exception as exc:
            log.exception("mail uid %s: could not be handled", uid)
            reason = f"could not be handled: {type(exc).__name__}"
            return await self._quarantine(raw, mail, folder, uidvalidity, uid, reason)
        await self._record(mail, folder, uidvalidity, uid, result)
        log.info(
            "mail uid %s from %s: %s %s (%s)",
            uid,
            mask_email(mail.sender),
            result.outcome.value,
            result.reference or "",
            result.reason or "",
        )
        return result

    # -- deciding -----------------------------------------------------------------

    async def _act(self, mail: ParsedMail) -> IntakeResult:
        if mail.sender is None:
            if "no From header" in mail.problems:
                raise Quarantine("no From header")
            raise Quarantine("no usable sender address")
        understood = understand(mail)
        if understood.disposition is not Disposition.REQUEST:
            return IntakeResult(_RECORD_ONLY[understood.disposition], reason=understood.reason)
        external_id = mail.message_id or f"<{mail.mail_key[:40]}@inbound.aina-dsr.invalid>"
        # A crash after the service committed but before our row: the letter is there already.
        done = await self._service.reference_for_message(external_id)
        if done is not None:
            return IntakeResult(Outcome.OPENED, done, "recovered after a restart")
        evidence, refused = self._evidence(mail.files)
        actor = Actor.person_email(mail.sender)
        for reference in await self._thread_candidates(mail, understood):
            result = await self._reply(reference, mail, understood, actor, external_id, evidence)
            if result is not None:
                return self._with_refused(result, refused, understood)
        kind = understood.kind or RequestKind.COMPLAINT
        view = await self._service.open_request(
            kind=kind,
            channel=Channel.EMAIL,
            language=understood.language,
            fields=understood.fields,
            email=mail.sender,
            body=self._body(mail),
            external_id=external_id,
            evidence=evidence,
            send_code_to_email=True,
        )
        result = IntakeResult(Outcome.OPENED, view.reference, understood.reason, kind.value)
        return self._with_refused(result, refused, understood)

    def _with_refused(
        self, result: IntakeResult, refused: tuple[str, ...], understood: Understanding
    ) -> IntakeResult:
        return IntakeResult(
            result.outcome,
            result.reference,
            result.reason,
            result.kind,
            understood.language,
            refused,
        )

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
        if not view.is_open:
            return None
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
                    )
                if verified:
                    return IntakeResult(Outcome.VERIFIED, reference, "code matched")
                return IntakeResult(Outcome.CODE_REFUSED, reference, f"code {outcome.value}")
            await self._service.attach(
                reference,
                actor,
                body=self._body(mail),
                external_id=external_id,
                evidence=evidence,
                fields=self._missing_only(view, understood.fields),
            )
        except NotAllowed:
            log.info(
                "mail from %s names %s, which is not theirs", mask_email(actor.email), reference
            )
            return None
        except IllegalTransition:
            return None
        return IntakeResult(Outcome.ATTACHED, reference, "reply")

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

    # -- one sender's share ----------------------------------------------------------

    async def _over_sender_limit(self, mail: ParsedMail) -> bool:
        index = self._vault.blind_index("email", mail.sender)
        if index is None:
            return False
        since = self._clock.now() - SENDER_WINDOW
        async with self._sessions() as session:
            taken = await session.scalar(
                select(func.count(InboundMail.id)).where(
                    InboundMail.sender_index == index,
                    InboundMail.received_at > since,
                    InboundMail.outcome != Outcome.RATE_LIMITED.value,
                )
            )
        return int(taken or 0) >= self._max_per_sender

    async def _rate_limited(
        self, raw: bytes, mail: ParsedMail, folder: str, uidvalidity: int, uid: int
    ) -> IntakeResult:
        """Keep the letter for staff, unanswered; tell staff on the first of the hour."""
        now = self._clock.now()
        index = self._vault.blind_index("email", mail.sender)
        reason = f"over {self._max_per_sender} letters an hour from this sender"
        try:
            async with self._sessions.begin() as session:
                earlier = await session.scalar(
                    select(func.count(InboundMail.id)).where(
                        InboundMail.sender_index == index,
                        InboundMail.received_at > now - SENDER_WINDOW,
                        InboundMail.outcome == Outcome.RATE_LIMITED.value,
                    )
                )
                row = InboundMail(
                    mail_key=mail.mail_key,
                    folder=folder[:255],
                    uidvalidity=uidvalidity,
                    uid=uid,
                    outcome=Outcome.RATE_LIMITED.value,
                    reason=reason,
                    sender_index=index,
                    raw_enc=self._vault.encrypt_bytes(raw),
                    received_at=now,
                    processed_at=now,
                )
                session.add(row)
                await session.flush()
                if not earlier:
                    await enqueue(
                        session,
                        self._vault,
                        now,
                        key=f"mail/{mail.mail_key}/rate_limited",
                        channel=Channel.TELEGRAM,
                        audience=Audience.STAFF_GROUP,
                        template="staff_mail_rate_limited",
                        language="en",
                        params={
                            "reference": None,
                            "mail_id": row.id,
                            "sender": mask_email(mail.sender),
                            "limit": self._max_per_sender,
                        },
                    )
        except IntegrityError:
            return IntakeResult(Outcome.DUPLICATE)
        log.info("mail uid %s from %s: rate limited", uid, mask_email(mail.sender))
        return IntakeResult(Outcome.RATE_LIMITED, reason=reason)

    # -- recording ----------------------------------------------------------------

    async def _record(
        self, mail: ParsedMail, folder: str, uidvalidity: int, uid: int, result: IntakeResult
    ) -> None:
        now = self._clock.now()
        request_id = None
        if result.reference is not None:
            request_id = (await self._service.get(result.reference)).id
        try:
            async with self._sessions.begin() as session:
                session.add(
                    InboundMail(
                        mail_key=mail.mail_key,
                        folder=folder[:255],
                        uidvalidity=uidvalidity,
                        uid=uid,
                        outcome=result.outcome.value,
                        reason=(result.reason or "")[:500] or None,
                        request_id=request_id,
                        sender_index=self._vault.blind_index("email", mail.sender),
                        received_at=now,
                        processed_at=now,
                    )
                )
                if result.refused_files and result.reference is not None and mail.sender:
                    await enqueue(
                        session,
                        self._vault,
                        now,
                        key=f"mail/{mail.mail_key}/attachments_refused",
                        channel=Channel.EMAIL,
                        audience=Audience.SUBJECT,
                        template="attachment_refused",
                        language=result.language or "en",
                        params={
                            "reference": result.reference,
                            "files": ", ".join(result.refused_files)[:500],
                            "limit_mb": max(1, self._max_attachment // (1024 * 1024)),
                        },
                        address=mail.sender,
                        request_id=request_id,
                    )
        except IntegrityError:
            log.info("mail uid %s was recorded meanwhile", uid)

    async def _quarantine(
        self,
        raw: bytes,
        mail: ParsedMail | None,
        folder: str,
        uidvalidity: int,
        uid: int,
        reason: str,
    ) -> IntakeResult:
        key = mail.mail_key if mail is not None else mail_key(raw, None)
        now = self._clock.now()
        try:
            async with self._sessions.begin() as session:
                row = InboundMail(
                    mail_key=key,
                    folder=folder[:255],
                    uidvalidity=uidvalidity,
                    uid=uid,
                    outcome=Outcome.QUARANTINED.value,
                    reason=reason[:500],
                    sender_index=self._vault.blind_index(
                        "email", mail.sender if mail is not None else None
                    ),
                    raw_enc=self._vault.encrypt_bytes(raw),
                    received_at=now,
                    processed_at=now,
                )
                session.add(row)
                await session.flush()
                await enqueue(
                    session,
                    self._vault,
                    now,
                    key=f"mail/{key}/quarantined",
                    channel=Channel.TELEGRAM,
                    audience=Audience.STAFF_GROUP,
                    template="staff_mail_quarantined",
                    language="en",
                    params={"reference": None, "mail_id": row.id, "reason": reason[:200]},
                )
        except IntegrityError:
            return IntakeResult(Outcome.DUPLICATE)
        log.warning("mail uid %s quarantined: %s", uid, reason)
        return IntakeResult(Outcome.QUARANTINED, reason=reason)
