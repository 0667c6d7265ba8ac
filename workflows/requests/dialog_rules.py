"""What the Telegram dialog decides, apart from how it talks: the next step, whose an answer is.

The bot's handlers ask these and say the outcome; the rules themselves (what a
kind still needs, what a typed contact is, whose request a button names) live
here, beside the request service they lead to.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum

from workflows.errors import NotAllowed
from workflows.identity import InvalidIdentifier, normalize_email, normalize_phone
from workflows.kinds import CLASSIFIED_KINDS, CONTACT_QUESTION, KindSpec, RequestKind
from workflows.requests.service import RequestService
from workflows.requests.states import Status
from workflows.snapshots import RequestView

_PHONE_LIKE = re.compile(r"^[\d\s()+\-]{6,}$")
# The fields whose words become the request's body, in the order given.
_BODY_FIELDS = ("correction", "text")


class Step(StrEnum):
    """What the dialog asks for next."""

    FIELD = "field"  # the next of the kind's questions
    EVIDENCE = "evidence"  # supporting documents, once, for a kind that takes them
    IDENTITY = "identity"  # a proof of who is asking
    SUMMARY = "summary"  # all is in: the summary to confirm


def next_step(spec: KindSpec, *, questions_left: bool, evidence_asked: bool, proven: bool) -> Step:
    """Whatever the dialog still needs for a request of ``spec``'s kind, in the order asked."""
    if questions_left:
        return Step.FIELD
    if spec.evidence and not evidence_asked:
        return Step.EVIDENCE
    if not proven:
        return Step.IDENTITY
    return Step.SUMMARY


def chosen_kind(value: str) -> RequestKind | None:
    """The kind a button names, if the dialog files it (only a kind the person chose)."""
    try:
        kind = RequestKind(value)
    except ValueError:
        return None
    return kind if kind in CLASSIFIED_KINDS else None


def questions_of(spec: KindSpec) -> list[str]:
    """The fields the dialog asks for a request of ``spec``'s kind, in order."""
    return [question.field for question in spec.questions]


def answer(field: str, text: str) -> dict[str, str] | None:
    """The fields an answer to ``field``'s question fills; None when it fills none (blank)."""
    if field == CONTACT_QUESTION:
        return classify_contact(text)
    return {field: text} if text else None


def classify_contact(text: str) -> dict[str, str]:
    """The policy wants a phone, an e-mail or a postal address: find out which was given."""
    if "@" in text:
        try:
            return {"email": normalize_email(text)}
        except InvalidIdentifier:
            pass
    if looks_like_phone(text):
        try:
            return {"phone": normalize_phone(text)}
        except InvalidIdentifier:
            pass
    return {"postal_address": text}


def looks_like_phone(text: str) -> bool:
    """Digits, spaces, brackets, plus and dashes, six or more: a typed phone number."""
    return _PHONE_LIKE.match(text) is not None


def typed_code(text: str) -> str | None:
    """The digits of a typed code (spaces and dashes ignored); None if it is not one."""
    attempt = re.sub(r"[\s\-]", "", text)
    return attempt if attempt.isdigit() else None


def request_body(fields: dict[str, object]) -> str | None:
    """The person's own words among the dialog's fields, as the request's body."""
    body = "\n".join(str(v) for k, v in fields.items() if k in _BODY_FIELDS and v)
    return body or None


def awaiting_reply(views: Sequence[RequestView]) -> RequestView | None:
    """The open request a message outside any dialog answers: the first waiting for information."""
    return next((v for v in views if v.status == Status.AWAITING_INFO.value), None)


async def may_open_another(service: RequestService, telegram_user_id: int) -> bool:
    """Whether the person has fewer requests open than the desk takes at once."""
    limit = service.limits.max_open_requests
    return await service.open_count(telegram_user_id=telegram_user_id) < limit


async def own_request(service: RequestService, reference: str, telegram_user_id: int) -> None:
    """Raises NotAllowed (or RequestNotFound) unless ``reference`` is the person's own request."""
    owner = (await service.get(reference)).subject_telegram_user_id
    if owner != telegram_user_id:
        raise NotAllowed("this request belongs to someone else")
