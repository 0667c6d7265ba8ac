"""One letter through the request service: a reply kept with its request, a code checked,
or a new request opened.

Threading follows the mail filters of osTicket and Zammad: the letter's
Message-IDs it answers first, then a reference in its subject, accepted only
from the request's own sender (the service refuses anyone else). A letter the
intake cannot act on raises :class:`mail.outcomes.Quarantine`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mail.authentication import dmarc_failed
from mail.classifier import KindClassifier
from mail.outcomes import RECORD_ONLY, IntakeResult, Outcome, Quarantine
from mail.parsing import MailFile, ParsedMail
from mail.spam import SpamRules
from mail.understanding import Disposition, Understanding, understand
from workflows.errors import IllegalTransition, NotAllowed, RequestNotFound
from workflows.identity import CodeOutcome
from workflows.kinds import RequestKind
from workflows.outbox.queue import Channel
from workflows.privacy.masking import mask_email
from workflows.requests.records import Evidence
from workflows.requests.service import RequestService
from workflows.requests.states import Status
from workflows.snapshots import Actor, RequestView

log = logging.getLogger(__name__)

MAX_FILES = 20

# Before a new request (and its code) comes of a letter: ``None``, or the cap's result.
Gate = Callable[[], IntakeResult | None]


def body_of(mail: ParsedMail) -> str:
    """What the desk keeps of a letter's words: its subject and text."""
    return f"{mail.subject}\n\n{mail.text}".strip()


def external_id_of(mail: ParsedMail) -> str:
    """The letter's Message-ID, or one made of its content when it has none."""
    return mail.message_id or f"<{mail.mail_key[:40]}@inbound.aina-dsr.invalid>"


def kind_of(understood: Understanding) -> tuple[RequestKind, tuple[RequestKind, ...]]:
    """The kind a new request opens as: ``unclassified`` with its likely kinds when unsure."""
    if understood.kind is not None:
        return understood.kind, ()
    return RequestKind.UNCLASSIFIED, understood.candidates


def evidence_of(
    files: tuple[MailFile, ...], max_attachment: int
) -> tuple[list[Evidence], tuple[str, ...]]:
    """The files kept as evidence, and the names of those refused (too big, too many)."""
    kept: list[Evidence] = []
    refused: list[str] = []
    for item in files:
        if len(item.data) > max_attachment or len(kept) >= MAX_FILES:
            refused.append(item.filename)
            continue
        if not item.data:
            continue
        kept.append(Evidence(item.filename, item.content_type, item.data))
    return kept, tuple(refused)


def missing_only(view: RequestView, fields: dict[str, Any]) -> dict[str, Any]:
    """Of the fields a letter gives, those the request still lacks."""
    wanted = {name for group in view.missing_fields for name in group.split("|")}
    return {name: value for name, value in fields.items() if name in wanted}


def only_codes(text: str, codes: tuple[str, ...]) -> bool:
    """Whether the text is little more than the codes (nothing else worth keeping)."""
    rest = text
    for code in codes:
        rest = rest.replace(code, "").replace(f"{code[:3]} {code[3:]}", "")
    return len("".join(ch for ch in rest if ch.isalnum())) < 40


class LetterHandler:
    """Understands a letter and acts on it alone through the request service."""

    def __init__(
        self,
        service: RequestService,
        classifier: KindClassifier,
        spam: SpamRules,
        authserv_id: str | None,
        max_attachment: int,
    ) -> None:
        self._service = service
        self._classifier = classifier
        self._spam = spam
        self._authserv_id = authserv_id
        self._max_attachment = max_attachment

    def understand(self, mail: ParsedMail) -> Understanding:
        """What the letter is; a letter with no sender to answer is quarantined."""
        if mail.sender is None:
            if "no From header" in mail.problems:
                raise Quarantine("no From header")
            raise Quarantine("no usable sender address")
        return understand(mail, classifier=self._classifier, spam=self._spam)

    def unverified(self, mail: ParsedMail) -> bool:
        """Our mail server says the From address is not the sender's (DMARC failed)."""
        return dmarc_failed(mail.authentication_results, self._authserv_id)

    def unverified_result(self) -> IntakeResult:
        return IntakeResult(Outcome.SENDER_UNVERIFIED, reason=f"dmarc=fail at {self._authserv_id}")

    async def act(self, mail: ParsedMail, gate: Gate | None = None) -> IntakeResult:
        """The letter acted on: recorded only, a reply, or (when ``gate`` allows) a new request."""
        understood = self.understand(mail)
        if understood.disposition is not Disposition.REQUEST:
            return IntakeResult(RECORD_ONLY[understood.disposition], reason=understood.reason)
        if self.unverified(mail):
            return self.unverified_result()
        assert mail.sender is not None  # understand() quarantines a letter without one
        external_id = external_id_of(mail)
        # A crash after the service committed but before our row: the letter is there already.
        done = (await self._service.references_for_messages([external_id])).get(external_id)
        if done is not None:
            reference, request_id = done
            return IntakeResult(
                Outcome.OPENED, reference, "recovered after a restart", request_id=request_id
            )
        evidence, refused = evidence_of(mail.files, self._max_attachment)
        actor = Actor.person_email(mail.sender)
        for reference in await self._thread_candidates(mail, understood):
            result = await self._reply(reference, mail, understood, actor, external_id, evidence)
            if result is not None:
                return self._with_refused(result, refused, understood)
        held = gate() if gate is not None else None
        if held is not None:
            return held
        kind, candidates = kind_of(understood)
        view = await self._service.open_request(
            kind=kind,
            candidates=candidates,
            channel=Channel.EMAIL,
            language=understood.language,
            fields=understood.fields,
            email=mail.sender,
            body=body_of(mail),
            external_id=external_id,
            evidence=evidence,
            send_code_to_email=True,
        )
        result = IntakeResult(
            Outcome.OPENED, view.reference, understood.reason, kind.value, request_id=view.id
        )
        return self._with_refused(result, refused, understood)

    @staticmethod
    def _with_refused(
        result: IntakeResult, refused: tuple[str, ...], understood: Understanding
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
                return await self._code_reply(
                    reference, view, mail, understood, actor, external_id, evidence, words
                )
            await self._service.attach(
                reference,
                actor,
                body=body_of(mail),
                external_id=external_id,
                evidence=evidence,
                fields=missing_only(view, understood.fields) if view.is_open else {},
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

    async def _code_reply(
        self,
        reference: str,
        view: RequestView,
        mail: ParsedMail,
        understood: Understanding,
        actor: Actor,
        external_id: str,
        evidence: list[Evidence],
        words: str,
    ) -> IntakeResult:
        """A reply with codes to a request awaiting verification: the codes tried, the rest kept."""
        outcome = CodeOutcome.WRONG
        for code in understood.codes[:3]:
            check = await self._service.verify_by_code(reference, code, actor)
            outcome = check.outcome
            if outcome is CodeOutcome.OK:
                break
        fields = missing_only(view, understood.fields)
        if evidence or fields or not only_codes(mail.text, understood.codes):
            await self._service.attach(
                reference,
                actor,
                body=body_of(mail),
                external_id=external_id,
                evidence=evidence,
                fields=fields,
                words=words,
            )
        if outcome is CodeOutcome.OK:
            return IntakeResult(Outcome.VERIFIED, reference, "code matched", request_id=view.id)
        return IntakeResult(
            Outcome.CODE_REFUSED, reference, f"code {outcome.value}", request_id=view.id
        )
