"""The outbox's messages: what one is, and how it is written with its cause.

A change and the messages it causes commit in one transaction, so a crash
never leaves a change unannounced nor an announcement without its change.
:func:`enqueue` writes a message in the caller's transaction under its
idempotency key, and the same key is never enqueued twice; the key travels
with the message so a channel can make a redelivery harmless (an e-mail keeps
its Message-ID, for instance). A dispatcher (:mod:`workflows.outbox.dispatcher`)
delivers the rows later through each channel's :class:`OutboundPort`, which
answers with a receipt or one of the errors below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from workflows.outbox.holds import holding, remember_when_committed
from workflows.persistence.tables import DataSubject, OutboxItem, Request
from workflows.persistence.upsert import upsert
from workflows.privacy.vault import Vault


class Channel(StrEnum):
    TELEGRAM = "telegram"
    EMAIL = "email"
    # A letter received by post is answered by post: its notices go to the staff group
    # as letters to print and send (bot.staff.post), never by Telegram or e-mail.
    POST = "post"


class Audience(StrEnum):
    SUBJECT = "subject"
    STAFF_GROUP = "staff_group"
    STAFF_USER = "staff_user"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True)
class OutgoingMessage:
    """What a channel needs to deliver one message."""

    id: int
    idempotency_key: str
    reference: str | None
    channel: Channel
    audience: Audience
    address: str | None
    template: str
    language: str
    params: Mapping[str, Any]
    attempt: int
    request_id: int | None = None


@dataclass(frozen=True)
class DeliveryReceipt:
    """What a channel reports after delivering: its own id and the text sent.

    ``keep``: what the channel keeps about the delivery (where a staff card was
    posted), written in the transaction that records it, so one commit does both.
    """

    external_id: str | None = None
    body: str | None = None
    keep: Callable[[AsyncSession], Awaitable[None]] | None = None


class RetryLater(Exception):
    """A passing failure: try again after ``delay`` seconds (or the backoff)."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class PermanentFailure(Exception):
    """The message can never be delivered as it is (a 5xx, a bad address)."""


class RecipientUnreachable(PermanentFailure):
    """The person cannot be reached on this channel now (blocked the bot)."""


class StaffGroupClosed(PermanentFailure):
    """The staff group itself cannot be written to: an alert there would fail too."""


class OutboundPort(Protocol):
    """A channel's way out: delivers one message or raises one of the errors above."""

    channel: Channel

    async def deliver(self, message: OutgoingMessage) -> DeliveryReceipt: ...


@runtime_checkable
class PreparingPort(Protocol):
    """A port that reads what a claimed batch needs in one go, before its deliveries."""

    async def prepare(self, messages: Sequence[OutgoingMessage]) -> None: ...


def _insert(session: AsyncSession) -> Any:
    return upsert(session, OutboxItem)


async def enqueue(
    session: AsyncSession,
    vault: Vault,
    now: datetime,
    *,
    key: str,
    channel: Channel,
    audience: Audience,
    template: str,
    language: str,
    params: Mapping[str, Any],
    address: str | None = None,
    request_id: int | None = None,
) -> None:
    """Add a message to the outbox in the caller's transaction; a known key is ignored."""
    message = NewMessage(key, channel, audience, template, language, params, address, request_id)
    await enqueue_many(session, vault, now, [message])


@dataclass(frozen=True)
class NewMessage:
    """One message for :func:`enqueue_many` (the arguments of :func:`enqueue`)."""

    key: str
    channel: Channel
    audience: Audience
    template: str
    language: str
    params: Mapping[str, Any]
    address: str | None = None
    request_id: int | None = None


async def enqueue_many(
    session: AsyncSession, vault: Vault, now: datetime, messages: Sequence[NewMessage]
) -> None:
    """:func:`enqueue` for several messages in one statement; a known key is ignored.

    Within an update that holds the person's notices (:mod:`workflows.outbox.holds`)
    those are written due after the hold, and remembered to be released.
    """
    if not messages:
        return
    held = holding()
    kept = {m.key for m in messages if held is not None and held.holds(m.channel, m.audience)}
    rows = [
        {
            "idempotency_key": message.key,
            "request_id": message.request_id,
            "channel": message.channel.value,
            "audience": message.audience.value,
            "address_enc": vault.encrypt(message.address),
            "template": message.template,
            "language": message.language,
            "params_enc": vault.encrypt_json(dict(message.params)),
            "status": OutboxStatus.PENDING.value,
            "attempts": 0,
            "next_attempt_at": held.due_at(now) if held and message.key in kept else now,
            "created_at": now,
        }
        for message in messages
    ]
    statement = _insert(session).on_conflict_do_nothing(index_elements=["idempotency_key"])
    if held is None or not kept:
        await session.execute(statement, rows)
        return
    # The ids of the rows written (a known key writes none): released once committed.
    written = await session.execute(
        statement.returning(OutboxItem.id, OutboxItem.idempotency_key), rows
    )
    ids = [item_id for item_id, key in written.all() if key in kept]
    remember_when_committed(session, held, ids)


def subject_route(
    vault: Vault, request_channel: str, subject: DataSubject
) -> tuple[Channel, str] | None:
    """Where a person hears about their request: the channel they used, or e-mail
    when Telegram refused us last time; ``None`` when there is no way to reach them.

    A request by post is answered by post, whatever else the person wrote on the
    letter: the route has no address of its own (the postal address is the
    request's, read when the letter is printed).

    Without an e-mail address, Telegram is tried even so: being unreachable is a
    fact of the moment (the person may have unblocked the bot), and a refusal
    again is reported to staff, where a message not sent at all would be lost.
    """
    channel = Channel(request_channel)
    if channel is Channel.POST:
        return channel, ""
    telegram = subject.telegram_user_id is not None and channel is Channel.TELEGRAM
    if telegram and not subject.telegram_unreachable:
        return channel, str(subject.telegram_user_id)
    address = vault.decrypt(subject.email_enc)
    if address is not None:
        return Channel.EMAIL, address
    return (channel, str(subject.telegram_user_id)) if telegram else None


UNREACHABLE_MARK = "unreachable: "


async def reroute_unreachable(
    session: AsyncSession, vault: Vault, now: datetime, subject_id: int, email: str
) -> int:
    """Send by e-mail what bounced off a person's Telegram before we knew their address.

    Called in the transaction that records a newly verified e-mail address; each
    message is re-sent at most once (its e-mail copy has a key of its own).
    """
    rows = await session.scalars(
        select(OutboxItem)
        .join(Request, Request.id == OutboxItem.request_id)
        .where(
            Request.subject_id == subject_id,
            OutboxItem.channel == Channel.TELEGRAM.value,
            OutboxItem.audience == Audience.SUBJECT.value,
            OutboxItem.status == OutboxStatus.FAILED.value,
            OutboxItem.last_error.startswith(UNREACHABLE_MARK),
        )
        .order_by(OutboxItem.id)
    )
    count = 0
    for item in rows:
        await enqueue(
            session,
            vault,
            now,
            key=f"{item.idempotency_key}/email",
            channel=Channel.EMAIL,
            audience=Audience.SUBJECT,
            template=item.template,
            language=item.language,
            params=vault.decrypt_json(item.params_enc) or {},
            address=email,
            request_id=item.request_id,
        )
        count += 1
    return count
