"""Requests by post: a paper letter registered with its date of receipt, and answered by post.

The operator registers a letter (``aina-dsr requests file --channel post``)
once they have read and checked it: the request is filed along the one filing
path (:meth:`~workflows.requests.intake.Intake._file`), received on the
letter's date of receipt, and verified at once by the registration (method
``post``, the operator named in the audit trail), so its card goes to the
staff group as a verified e-mail request's does. Its clock runs from the date
of receipt, whatever the kind: what the letter encloses came with it.

Everything the person is owed afterwards (the registration, the deadline,
questions, the answer) is routed to post (:func:`~workflows.outbox.queue.subject_route`):
the Telegram channel hands each such letter to the staff group, with the
postal address, to print and send.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import select

from workflows.i18n import DeskInfo, catalogue, render_notification
from workflows.kinds import RequestKind
from workflows.outbox.queue import Channel
from workflows.persistence.tables import DataSubject, OutboxItem
from workflows.requests.intake import Intake, _Filing, language_or_default
from workflows.requests.verification import VerificationMethod
from workflows.snapshots import Actor, ActorKind, RequestView


class LetterRefused(ValueError):
    """A letter that cannot be registered as given; the message says why, in one line."""


@dataclass(frozen=True)
class PostLetter:
    """A paper letter as the operator reads it."""

    kind: str
    received_on: date
    full_name: str
    postal_address: str
    language: str | None = None
    text: str | None = None
    phone: str | None = None
    email: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LetterToPost:
    """A notice to a person who wrote by post: what it says, and whether staff have it."""

    at: datetime
    template: str
    language: str
    params: Mapping[str, Any]
    status: str  # the outbox's: pending until the staff group has it, then sent
    handed_at: datetime | None  # when the staff group got it to print

    def text(self, info: DeskInfo | None = None) -> str:
        """The letter as the person reads it (:func:`letter_text`)."""
        return letter_text(self.template, self.language, self.params, info or DeskInfo())


def letter_text(template: str, language: str, params: Mapping[str, Any], info: DeskInfo) -> str:
    """A notice as printed on paper: its subject, its text and the desk's signature."""
    note = render_notification(template, language, params, context=info.context(language))
    signature = catalogue().text(language, "mail.signature", **info.context(language))
    return f"{note.subject}\n\n{note.text}\n\n{signature}"


def letter_kind(value: str) -> RequestKind:
    """The kind a letter is registered as: one of the table's, never ``unclassified``."""
    try:
        kind = RequestKind(value)
    except ValueError:
        kind = RequestKind.UNCLASSIFIED
    if kind is RequestKind.UNCLASSIFIED:
        known = ", ".join(k.value for k in RequestKind if k is not RequestKind.UNCLASSIFIED)
        raise LetterRefused(f"unknown kind {value!r}; one of: {known}")
    return kind


class PostIntake(Intake):
    """The request service's use case of registering a letter received by post (a mixin)."""

    async def file_by_post(self, letter: PostLetter, operator: str | None = None) -> RequestView:
        """Register ``letter``: filed, received on its date, verified by the registration.

        Raises :class:`LetterRefused` for an unknown kind, a date of receipt
        after today, or a letter without the name or postal address to answer to.
        """
        kind = letter_kind(letter.kind)
        now = self._clock.now()
        today = self._calendar.local_date(now)
        if letter.received_on > today:
            raise LetterRefused(
                f"the date of receipt {letter.received_on.isoformat()} is after today"
                f" ({today.isoformat()}): a letter is registered once it has arrived"
            )
        if not letter.full_name.strip() or not letter.postal_address.strip():
            raise LetterRefused("a letter by post needs the person's name and postal address")
        given = {
            "full_name": letter.full_name.strip(),
            "postal_address": letter.postal_address.strip(),
            "phone": (letter.phone or "").strip(),
            "email": (letter.email or "").strip(),
            "text": (letter.text or "").strip(),
        }
        fields = {**letter.fields, **{k: v for k, v in given.items() if v}}
        language = language_or_default(letter.language)
        filing = _Filing(
            kind=kind,
            likely=(),
            channel=Channel.POST,
            language=language,
            fields=fields,
            email=None,
            body=letter.text or None,
            external_id=None,
            evidence=(),
            code=False,
            received=datetime.combine(letter.received_on, time(0), tzinfo=self._calendar.tz),
        )
        async with self._unit() as session:
            # The writer of a letter is a person of their own: nothing on paper proves a
            # phone or a mailbox, so no Telegram account or e-mail sender is joined to it.
            subject = DataSubject(
                telegram_user_id=None,
                telegram_unreachable=False,
                language=language,
                created_at=now,
                full_name_enc=self._vault.encrypt(given["full_name"]),
            )
            session.add(subject)
            await session.flush()
            (request,), _ = await self._file(session, [filing], [subject])
            operator_actor = Actor(ActorKind.SYSTEM, Channel.POST.value, name=operator)
            await self._verified(
                session,
                request,
                subject,
                VerificationMethod.POST,
                notice="post_registered",
                by=operator_actor,
            )
            return await self._view(session, request, fresh=True)

    async def letters_to_post(self, reference: str) -> list[LetterToPost]:
        """The notices of a request by post, oldest first (none for another channel's)."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            rows = await session.scalars(
                select(OutboxItem)
                .where(
                    OutboxItem.request_id == request.id,
                    OutboxItem.channel == Channel.POST.value,
                )
                .order_by(OutboxItem.id)
            )
            return [
                LetterToPost(
                    at=row.created_at,
                    template=row.template,
                    language=row.language,
                    params=self._vault.decrypt_json(row.params_enc) or {},
                    status=row.status,
                    handed_at=row.sent_at,
                )
                for row in rows
            ]
