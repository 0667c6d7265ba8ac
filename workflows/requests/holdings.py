"""What the desk itself holds about a person: contacts, requests, messages and files.

An access report tells the person this beside the customer list's data
(policy section 6: the composition of the data and where it came from). The
person is the request's data subject and every subject sharing their Telegram
account, phone or e-mail address (a person who wrote once by e-mail and once
in the bot is one person to the desk). Files are named with size and date,
never read: the report is not the place to send a passport scan back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from workflows.persistence.tables import Attachment, DataSubject, Message, Request, Verification
from workflows.privacy.vault import Vault
from workflows.requests.records import Records
from workflows.requests.verification import VerificationMethod


@dataclass(frozen=True)
class HeldRequest:
    """One of the person's requests: its reference, kind, when it came, where it stands."""

    reference: str
    kind: str
    received_at: datetime
    status: str
    closed_at: datetime | None = None


@dataclass(frozen=True)
class HeldMessage:
    """A message the person sent the desk, as the desk keeps it (empty once retention erased it)."""

    reference: str
    channel: str
    at: datetime
    text: str


@dataclass(frozen=True)
class HeldFile:
    """A file the person sent with a request: its name, size in bytes and date, not its content."""

    reference: str
    name: str
    size: int
    at: datetime


@dataclass(frozen=True)
class DeskHoldings:
    """Everything the desk keeps about one person, oldest first."""

    telegram_user_id: str | None = None
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    requests: tuple[HeldRequest, ...] = ()
    messages: tuple[HeldMessage, ...] = ()
    files: tuple[HeldFile, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.telegram_user_id
            or self.phones
            or self.emails
            or self.names
            or self.requests
            or self.messages
            or self.files
        )


class Holdings(Records):
    """The request service's reading of what the desk holds about a person (a mixin)."""

    async def desk_holdings(self, reference: str) -> DeskHoldings:
        """What the desk holds about the person behind request ``reference``."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            subject = await session.get_one(DataSubject, request.subject_id)
            return await held_about(session, self._vault, subject)


async def held_about(session: AsyncSession, vault: Vault, subject: DataSubject) -> DeskHoldings:
    """What the desk holds about the person whose data subject is ``subject``, in ``session``."""
    subjects = (await session.scalars(_SAME_PERSON, _same_person(subject))).all()
    requests = (
        await session.scalars(_REQUESTS_OF_SUBJECTS, {"subject_ids": [s.id for s in subjects]})
    ).all()
    references = {r.id: r.reference for r in requests}
    return DeskHoldings(
        telegram_user_id=next(
            (str(s.telegram_user_id) for s in subjects if s.telegram_user_id), None
        ),
        phones=_distinct(vault, (s.phone_enc for s in subjects)),
        emails=await _emails(session, vault, subjects, list(references)),
        names=_distinct(vault, (s.full_name_enc for s in subjects)),
        requests=tuple(
            HeldRequest(r.reference, r.kind, r.received_at, r.status, r.closed_at) for r in requests
        ),
        messages=await _messages(session, vault, references),
        files=await _files(session, vault, references),
    )


def _distinct(vault: Vault, tokens: Iterable[bytes | None]) -> tuple[str, ...]:
    decrypted = (vault.decrypt(token) for token in tokens)
    return tuple(dict.fromkeys(value for value in decrypted if value))


async def _emails(
    session: AsyncSession, vault: Vault, subjects: Sequence[DataSubject], request_ids: list[int]
) -> tuple[str, ...]:
    # The subjects' addresses, and any address a code proved for one of their requests.
    proved = await session.scalars(_PROVED_EMAILS, {"request_ids": request_ids})
    return _distinct(vault, [*(s.email_enc for s in subjects), *proved])


async def _messages(
    session: AsyncSession, vault: Vault, references: dict[int, str]
) -> tuple[HeldMessage, ...]:
    rows = await session.scalars(_MESSAGES_IN, {"request_ids": list(references)})
    return tuple(
        HeldMessage(
            references[row.request_id],
            row.channel,
            row.created_at,
            vault.decrypt(row.body_enc) or "",
        )
        for row in rows
    )


async def _files(
    session: AsyncSession, vault: Vault, references: dict[int, str]
) -> tuple[HeldFile, ...]:
    rows = await session.execute(_FILES_IN, {"request_ids": list(references)})
    return tuple(
        HeldFile(references[request_id], vault.decrypt(name) or "", size, at)
        for request_id, name, size, at in rows.all()
    )


def _same_person(subject: DataSubject) -> dict[str, object]:
    """:data:`_SAME_PERSON`'s parameters: the same row, Telegram account, phone or e-mail.

    What the subject does not have is NULL, which equals nothing.
    """
    return {
        "id": subject.id,
        "telegram_user_id": subject.telegram_user_id,
        "phone_index": subject.phone_index,
        "email_index": subject.email_index,
    }


# Built once, the values given as parameters: building a statement anew costs more than
# running it (BENCHMARKS.md section 6, fifth session). A staff card's preview runs them all.
_SAME_PERSON = (
    select(DataSubject)
    .where(
        or_(
            DataSubject.id == bindparam("id"),
            DataSubject.telegram_user_id == bindparam("telegram_user_id"),
            DataSubject.phone_index == bindparam("phone_index"),
            DataSubject.email_index == bindparam("email_index"),
        )
    )
    .order_by(DataSubject.id)
)
_REQUESTS_OF_SUBJECTS = (
    select(Request)
    .where(Request.subject_id.in_(bindparam("subject_ids", expanding=True)))
    .order_by(Request.received_at, Request.id)
)
_PROVED_EMAILS = (
    select(Verification.target_enc)
    .where(
        Verification.request_id.in_(bindparam("request_ids", expanding=True)),
        Verification.method == VerificationMethod.EMAIL_CODE,
        Verification.verified_at.is_not(None),
    )
    .order_by(Verification.id)
)
_MESSAGES_IN = (
    select(Message)
    .where(
        Message.request_id.in_(bindparam("request_ids", expanding=True)),
        Message.direction == "in",
    )
    .order_by(Message.created_at, Message.id)
)
_FILES_IN = (
    select(Attachment.request_id, Attachment.filename_enc, Attachment.size, Attachment.created_at)
    .outerjoin(Message, Message.id == Attachment.message_id)
    .where(
        Attachment.request_id.in_(bindparam("request_ids", expanding=True)),
        or_(Message.id.is_(None), Message.direction == "in"),
    )
    .order_by(Attachment.created_at, Attachment.id)
)
