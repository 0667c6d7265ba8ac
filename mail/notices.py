"""What the desk says about a letter it records: notices to staff, short notes to the writer."""

from __future__ import annotations

from dataclasses import dataclass

from mail.outcomes import HELD, IntakeResult, Outcome
from mail.parsing import ParsedMail
from mail.settings import MB
from workflows.outbox.queue import Audience, Channel, NewMessage
from workflows.privacy.masking import mask_email
from workflows.requests.mail_caps import Cap, Caps

# What staff are shown of a letter they cannot answer through the desk.
NOTICE_SUBJECT = 200
NOTICE_LINES = 8
NOTICE_CHARS = 800


@dataclass(frozen=True)
class Limits:
    """The limits the notices name: the caps, and the sizes of a file and of a letter."""

    caps: Caps
    max_attachment: int
    max_letter: int


@dataclass(frozen=True)
class Recorded:
    """A letter as its row records it, with what decides the notices it causes."""

    result: IntakeResult
    mail: ParsedMail | None
    notify: bool = False  # held back: the first of the hour, staff are told
    size: int | None = None  # too large: the letter's size
    answer: bool = False  # too large: the writer is told how to send it again


def notices_for(letter: Recorded, row_id: int, key: str, limits: Limits) -> list[NewMessage]:
    """What the letter's row makes the desk say: to staff, or about refused files."""
    result, sender = letter.result, letter.mail.sender if letter.mail else None
    if result.outcome is Outcome.QUARANTINED:
        reason = (result.reason or "")[:200]
        return [to_staff(key, "quarantined", {"mail_id": row_id, "reason": reason})]
    if result.outcome is Outcome.SENDER_UNVERIFIED and letter.mail is not None:
        return [to_staff(key, "sender_unverified", shown(letter.mail, row_id))]
    if result.outcome in HELD:
        if not letter.notify:
            return []
        cap = Cap(result.outcome.value)
        params: dict[str, object] = {"mail_id": row_id, "limit": limits.caps.limit(cap)}
        if cap is not Cap.TOTAL:
            params["sender"] = mask_email(sender)
        return [to_staff(key, cap.value, params)]
    if result.outcome is Outcome.TOO_LARGE:
        return _too_large(letter, row_id, key, limits)
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
                    "limit_mb": max(1, limits.max_attachment // MB),
                },
                address=sender,
                request_id=result.request_id,
            )
        ]
    return []


def _too_large(letter: Recorded, row_id: int, key: str, limits: Limits) -> list[NewMessage]:
    """Staff are told of a letter too large to take; its writer, when allowed, how to resend."""
    mail, language = letter.mail, letter.result.language or "en"
    sender = mail.sender if mail is not None else None
    sizes = {
        "size_mb": max(1, round((letter.size or 0) / MB)),
        "limit_mb": max(1, limits.max_letter // MB),
    }
    what = "too_large" if letter.answer else "too_large_unanswered"
    staff = to_staff(
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
            "attachment_mb": max(1, limits.max_attachment // MB),
            "in_reply_to": mail.message_id if mail is not None else None,
            **sizes,
        },
        address=sender,
    )
    return [staff, note]


def shown(mail: ParsedMail, row_id: int) -> dict[str, object]:
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


def to_staff(key: str, what: str, params: dict[str, object]) -> NewMessage:
    """A notice to the staff group about a letter that opened no request."""
    return NewMessage(
        key=f"mail/{key}/{what}",
        channel=Channel.TELEGRAM,
        audience=Audience.STAFF_GROUP,
        template=f"staff_mail_{what}",
        language="en",
        params={"reference": None, **params},
    )
