"""What can become of a letter: the outcomes the intake records and reports."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mail.understanding import Disposition
from workflows.requests.mail_caps import Cap


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
HELD = {Outcome.RATE_LIMITED, Outcome.CAPPED_MAILBOX, Outcome.CAPPED_TOTAL}
# What is not acted on is kept raw (encrypted) for staff; of a letter too large, its headers.
KEPT = {Outcome.QUARANTINED, Outcome.TOO_LARGE, Outcome.SENDER_UNVERIFIED, *HELD}

RECORD_ONLY = {
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
