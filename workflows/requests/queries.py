"""Reading requests: one by reference, lists, what a staff card or a letter needs, the counts.

Each method reads in a session of its own and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from workflows.channel_state.staff_cards import CardMessage, card_message
from workflows.errors import RequestNotFound
from workflows.outbox.queue import Channel
from workflows.persistence.tables import Attachment, Customer, DataSubject, Message, Request
from workflows.requests.holdings import DeskHoldings, held_about
from workflows.requests.records import Evidence, Records
from workflows.requests.states import OPEN
from workflows.snapshots import RequestView

# The statements of every dialog, built once: building one anew costs more than running
# it (BENCHMARKS.md section 6, fifth session); the values go as parameters.
_OPEN_OF_TELEGRAM_USER = (
    select(func.count(Request.id))
    .join(DataSubject, DataSubject.id == Request.subject_id)
    .where(
        DataSubject.telegram_user_id == bindparam("telegram_user_id"),
        Request.status.in_([status.value for status in OPEN]),
    )
)
_REFERENCES_OF_MESSAGES = (
    select(Message.external_id, Request.reference, Request.id)
    .join(Request, Request.id == Message.request_id)
    .where(Message.external_id.in_(bindparam("external_ids", expanding=True)))
    .order_by(Message.id)
)
_EVIDENCE_NAMES = (
    select(Attachment.filename_enc)
    .outerjoin(Message, Message.id == Attachment.message_id)
    .where(
        Attachment.request_id == bindparam("request_id"),
        or_(Message.id.is_(None), Message.direction == "in"),
    )
    .order_by(Attachment.id)
)


@dataclass(frozen=True)
class CardFacts:
    """What a staff card shows of a request, read together."""

    view: RequestView
    attachments: list[str]  # the evidence's file names
    contacts: dict[str, str]  # see RequestService.subject_contacts
    customer_id: str | None  # the directory's id of the matched customer
    # What the desk holds about the person (an access preview), when asked for.
    holdings: DeskHoldings | None = None
    # Where the card sits in the staff group, if it was posted (edited in place).
    card_at: CardMessage | None = None


@dataclass(frozen=True)
class MailThread:
    """A request as a letter about it needs it (:meth:`Queries.mail_thread`)."""

    due_at: datetime | None
    missing_fields: tuple[str, ...]
    message_ids: tuple[tuple[str, str], ...]  # (direction, Message-ID) on e-mail, oldest first


class Queries(Records):
    """The request service's reading use cases (a mixin)."""

    async def get(self, reference: str, *, with_events: bool = False) -> RequestView:
        """The request with this reference; raises :class:`RequestNotFound`."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            return await self._view(session, request, with_events=with_events)

    async def list_requests(
        self,
        *,
        status: Sequence[str] | None = None,
        overdue: bool = False,
        open_only: bool = False,
        telegram_user_id: int | None = None,
        with_events: bool = False,
    ) -> list[RequestView]:
        """Requests by due date (the undated last), filtered as asked."""
        now = self._clock.now()
        query = select(Request)
        if status:
            query = query.where(Request.status.in_(list(status)))
        if open_only or overdue:
            query = query.where(Request.closed_at.is_(None))
        if overdue:
            query = query.where(Request.due_at < now)
        if telegram_user_id is not None:
            query = query.join(DataSubject, DataSubject.id == Request.subject_id).where(
                DataSubject.telegram_user_id == telegram_user_id
            )
        query = query.order_by(Request.due_at.is_(None), Request.due_at, Request.id)
        async with self._sessions() as session:
            rows = (await session.scalars(query)).all()
            return [await self._view(session, row, with_events=with_events) for row in rows]

    async def open_count(self, *, telegram_user_id: int) -> int:
        """How many requests the Telegram user has open (what the open-request limit counts)."""
        async with self._sessions() as session:
            count = await session.scalar(
                _OPEN_OF_TELEGRAM_USER, {"telegram_user_id": telegram_user_id}
            )
        return int(count or 0)

    async def count_open(self) -> int:
        """How many requests are open."""
        async with self._sessions() as session:
            total = await session.scalar(
                select(func.count(Request.id)).where(Request.status.in_([s.value for s in OPEN]))
            )
            return int(total or 0)

    # -- files -----------------------------------------------------------------

    async def evidence(self, reference: str) -> list[Evidence]:
        """The files attached to a request, decrypted."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            rows = await session.scalars(
                select(Attachment)
                .outerjoin(Message, Message.id == Attachment.message_id)
                .where(
                    Attachment.request_id == request.id,
                    or_(Message.id.is_(None), Message.direction == "in"),
                )
                .order_by(Attachment.id)
            )
            return [self._decrypted(row) for row in rows]

    async def documents(self, reference: str, ids: Sequence[int]) -> list[Evidence]:
        """Files the desk sends with a message (an access report), decrypted, in order."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            rows = await session.scalars(
                select(Attachment)
                .where(Attachment.request_id == request.id, Attachment.id.in_(list(ids)))
                .order_by(Attachment.id)
            )
            return [self._decrypted(row) for row in rows]

    def _decrypted(self, row: Attachment) -> Evidence:
        return Evidence(
            filename=self._vault.decrypt(row.filename_enc) or "",
            content_type=row.content_type,
            data=self._vault.decrypt_bytes(row.data_enc),
        )

    async def _evidence_names(self, session: AsyncSession, request: Request) -> list[str]:
        """The file names of the person's evidence, without reading the files."""
        rows = await session.scalars(_EVIDENCE_NAMES, {"request_id": request.id})
        return [self._vault.decrypt(name) or "" for name in rows]

    # -- the person ------------------------------------------------------------

    async def card_facts(
        self, reference: str, *, holdings_if: Callable[[RequestView], bool] | None = None
    ) -> CardFacts:
        """Everything a staff card shows, read in one session.

        ``holdings_if``: whether the card of this view shows what the desk holds about
        the person (an access preview); if so, it is read in the same session.
        """
        async with self._sessions() as session:
            request = await self._load(session, reference)
            subject = await session.get_one(DataSubject, request.subject_id)
            view = await self._view(session, request, with_events=True)
            held = holdings_if is not None and holdings_if(view)
            return CardFacts(
                view=view,
                attachments=await self._evidence_names(session, request),
                contacts=self._contacts(subject),
                customer_id=await self._customer_external_id(session, request),
                holdings=await held_about(session, self._vault, subject) if held else None,
                card_at=await card_message(session, request.id),
            )

    async def subject_contacts(self, reference: str) -> dict[str, str]:
        """What the desk knows of how to reach the person: verified phone, e-mail, Telegram id."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            return self._contacts(await session.get_one(DataSubject, request.subject_id))

    def _contacts(self, subject: DataSubject) -> dict[str, str]:
        contacts = {
            "phone": self._vault.decrypt(subject.phone_enc),
            "email": self._vault.decrypt(subject.email_enc),
            "telegram_user_id": str(subject.telegram_user_id) if subject.telegram_user_id else None,
        }
        return {k: v for k, v in contacts.items() if v}

    async def customer_of(self, reference: str) -> str | None:
        """The directory's id of the customer the request matched, if any."""
        async with self._sessions() as session:
            return await self._customer_external_id(session, await self._load(session, reference))

    async def _customer_external_id(self, session: AsyncSession, request: Request) -> str | None:
        if request.customer_id is None:
            return None
        customer = await session.get(Customer, request.customer_id)
        return customer.external_id if customer is not None else None

    # -- messages and mail threads ---------------------------------------------

    async def messages(self, reference: str) -> list[tuple[str, str, str | None]]:
        """(direction, channel, body) of every message of a request, oldest first."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            rows = await session.scalars(
                select(Message).where(Message.request_id == request.id).order_by(Message.id)
            )
            return [(r.direction, r.channel, self._vault.decrypt(r.body_enc)) for r in rows]

    async def reference_for_message(self, external_id: str) -> str | None:
        """The request a channel message id belongs to (an e-mail's Message-ID, in or out).

        E-mail threading: a reply's In-Reply-To names a Message-ID we sent.
        """
        async with self._sessions() as session:
            reference = await session.scalar(
                select(Request.reference)
                .join(Message, Message.request_id == Request.id)
                .where(Message.external_id == external_id.strip())
                .order_by(Message.id)
                .limit(1)
            )
            return reference

    async def references_for_messages(
        self, external_ids: Iterable[str]
    ) -> dict[str, tuple[str, int]]:
        """:meth:`reference_for_message` for many ids in one query: id -> (reference, request id).

        Ids the desk does not know are left out.
        """
        async with self._sessions() as session:
            return await message_references(session, external_ids)

    async def message_ids(self, reference: str, channel: Channel | str) -> list[tuple[str, str]]:
        """(direction, external id) of a request's messages on ``channel``, oldest first."""
        async with self._sessions() as session:
            request = await self._load(session, reference)
            rows = await session.execute(
                select(Message.direction, Message.external_id)
                .where(
                    Message.request_id == request.id,
                    Message.channel == Channel(channel).value,
                    Message.external_id.is_not(None),
                )
                .order_by(Message.id)
            )
            return [(direction, str(external)) for direction, external in rows.all()]

    async def mail_thread(self, reference: str) -> MailThread:
        """What a letter about the request needs, in one query; raises :class:`RequestNotFound`."""
        found = await self.mail_threads([reference])
        if not found:
            raise RequestNotFound(reference)
        return next(iter(found.values()))

    async def mail_threads(self, references: Iterable[str]) -> dict[str, MailThread]:
        """:meth:`mail_thread` for many requests in one query; unknown references left out."""
        wanted = sorted({reference.strip().upper() for reference in references})
        if not wanted:
            return {}
        rows = (
            await self._read(
                select(
                    Request.reference,
                    Request.kind,
                    Request.due_at,
                    Request.fields_enc,
                    Message.direction,
                    Message.external_id,
                )
                .outerjoin(
                    Message,
                    and_(
                        Message.request_id == Request.id,
                        Message.channel == Channel.EMAIL.value,
                        Message.external_id.is_not(None),
                    ),
                )
                .where(Request.reference.in_(wanted))
                .order_by(Message.id)
            )
        ).all()
        heads: dict[str, tuple[str, datetime | None, bytes | None]] = {}
        ids: dict[str, list[tuple[str, str]]] = {}
        for reference, kind, due_at, fields_enc, direction, external in rows:
            heads.setdefault(reference, (kind, due_at, fields_enc))
            if external:
                ids.setdefault(reference, []).append((str(direction), str(external)))
        threads: dict[str, MailThread] = {}
        for reference, (kind, due_at, fields_enc) in heads.items():
            fields = dict(self._vault.decrypt_json(fields_enc) or {})
            threads[reference] = MailThread(
                due_at=due_at,
                missing_fields=self._missing_fields(kind, fields),
                message_ids=tuple(ids.get(reference, ())),
            )
        return threads

    async def _read(self, query: Any) -> Any:
        async with self._sessions() as session:
            return await session.execute(query)


async def message_references(
    session: AsyncSession, external_ids: Iterable[str]
) -> dict[str, tuple[str, int]]:
    """:meth:`Queries.references_for_messages` in the caller's session."""
    wanted = sorted({external.strip() for external in external_ids if external.strip()})
    if not wanted:
        return {}
    found: dict[str, tuple[str, int]] = {}
    rows = await session.execute(_REFERENCES_OF_MESSAGES, {"external_ids": wanted})
    for external, reference, request_id in rows.all():
        found.setdefault(str(external), (reference, request_id))
    return found


async def filed_reference(session: AsyncSession, external_id: str | None) -> str | None:
    """:meth:`Queries.reference_for_message` in the caller's session (None: no id)."""
    if external_id is None:
        return None
    found = await message_references(session, [external_id])
    return found[external_id.strip()][0] if external_id.strip() in found else None
