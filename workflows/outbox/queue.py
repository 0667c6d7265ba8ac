"""The outbox: messages written with their cause, delivered later by the channels.

A change and the messages it causes commit in one transaction, so a crash
never leaves a change unannounced nor an announcement without its change.
A dispatcher claims due rows, hands each to the channel's
:class:`OutboundPort`, and records what happened. Delivery is at-least-once;
the idempotency key travels with the message so a channel can make a
redelivery harmless (an e-mail keeps its Message-ID, for instance), and the
same key is never enqueued twice.

How a message is sent once, and nothing stays stuck:

- A claim carries the dispatcher's owner token and a lease (two minutes).
  Every later change of the row (sent, failed, retry) is made only while the
  row is still that token's claim.
- The claim never outlives its lease while its owner works: the lease of the
  rows still to go is renewed every quarter of a lease, so each delivery
  starts with three quarters of a lease ahead (a delivery hung longer than
  that is the one way to a double, and it is logged as an error when its
  recording finds the claim taken).
- A claim whose owner is dead is taken back at once, not after the lease: see
  :mod:`workflows.outbox.owners` (on SQLite one process owns the outbox, so a
  restarted desk takes back everything it did not claim itself; on PostgreSQL
  each owner holds an advisory lock that dies with its connection).
- A delivery the database fails to record is recorded again a few times, then
  kept in memory and recorded before the next claim: the same process never
  sends it again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.metrics import count_delivery
from workflows.outbox.owners import ClaimOwners, LeaseOnly
from workflows.persistence.tables import DataSubject, Message, OutboxItem, Request
from workflows.persistence.upsert import upsert
from workflows.privacy.audit import record_event
from workflows.privacy.vault import Vault

log = logging.getLogger(__name__)


class Channel(StrEnum):
    TELEGRAM = "telegram"
    EMAIL = "email"


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
    """What a channel reports after delivering: its own id and the text sent."""

    external_id: str | None = None
    body: str | None = None


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


# The alerts a failed delivery raises in the staff group; never raised about themselves.
ALERTS = frozenset({"staff_delivery_failed", "staff_post_failed"})


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
    """:func:`enqueue` for several messages in one statement; a known key is ignored."""
    if not messages:
        return
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
            "next_attempt_at": now,
            "created_at": now,
        }
        for message in messages
    ]
    statement = _insert(session).on_conflict_do_nothing(index_elements=["idempotency_key"])
    await session.execute(statement, rows)


def subject_route(
    vault: Vault, request_channel: str, subject: DataSubject
) -> tuple[Channel, str] | None:
    """Where a person hears about their request: the channel they used, or e-mail
    when Telegram refused us last time; ``None`` when there is no way to reach them.

    Without an e-mail address, Telegram is tried even so: being unreachable is a
    fact of the moment (the person may have unblocked the bot), and a refusal
    again is reported to staff, where a message not sent at all would be lost.
    """
    channel = Channel(request_channel)
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


def backoff(attempt: int, base: float = 5.0, cap: float = 3600.0) -> float:
    """Seconds to wait before the next try after ``attempt`` failed tries."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


class OutboxDispatcher:
    """Claims due outbox rows and hands them to the channel that delivers them.

    ``run_once`` is serial (a lock makes it so): a row this dispatcher still
    holds when a run starts was left by an earlier run that failed midway, and
    is taken up again. Deliveries the database could not record are kept in
    memory, recorded at the start of each run, and never claimed again.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        clock: Clock,
        ports: Mapping[Channel, OutboundPort],
        *,
        lease: timedelta = timedelta(minutes=2),
        batch: int = 50,
        owners: ClaimOwners | None = None,
        token: str | None = None,
        recording_pauses: Sequence[float] = (0.5, 2.0, 5.0),
        pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._ports = dict(ports)
        self._lease = lease
        self._batch = batch
        self._owners: ClaimOwners = owners or LeaseOnly()
        self.token = token or secrets.token_hex(16)
        self._recording_pauses = tuple(recording_pauses)
        self._pause = pause
        # Delivered, but the database did not take the record yet: never to be sent again.
        self._unrecorded: dict[int, tuple[OutgoingMessage, DeliveryReceipt]] = {}
        self._running = asyncio.Lock()

    def _held(self) -> ColumnElement[bool]:
        """The row is still this dispatcher's claim."""
        return and_(
            OutboxItem.claimed_by == self.token, OutboxItem.status == OutboxStatus.SENDING.value
        )

    async def _claim(self) -> list[int]:
        now = self._clock.now()
        channels = OutboxItem.channel.in_([c.value for c in self._ports])
        sending = OutboxItem.status == OutboxStatus.SENDING.value
        async with self._sessions() as session:
            holders = await session.scalars(
                select(OutboxItem.claimed_by)
                .where(
                    sending,
                    channels,
                    OutboxItem.lease_until > now,
                    OutboxItem.claimed_by != self.token,
                )
                .distinct()
            )
            others = {holder for holder in holders if holder is not None}
        gone = await self._owners.gone(others) if others else set()
        due = or_(
            and_(
                OutboxItem.status == OutboxStatus.PENDING.value, OutboxItem.next_attempt_at <= now
            ),
            # A dispatcher that died mid-delivery left its lease behind...
            and_(sending, OutboxItem.lease_until <= now),
            # ...or is known to be dead already (its claims are free at once)...
            and_(sending, OutboxItem.claimed_by.in_(gone)),
            # ...or it is this one, whose last run stopped midway (runs are serial).
            self._held(),
        )
        # What this process delivered already is recorded, never claimed to be sent again.
        unsent = OutboxItem.id.not_in(list(self._unrecorded))
        async with self._sessions.begin() as session:
            rows = await session.scalars(
                select(OutboxItem.id)
                .where(due, channels, unsent)
                .order_by(OutboxItem.next_attempt_at, OutboxItem.id)
                .limit(self._batch)
            )
            wanted = list(rows)
            if not wanted:
                return []
            # One UPDATE for the batch; ``due`` again, so a row another dispatcher took
            # meanwhile (PostgreSQL re-reads a row it waited for) is not taken twice.
            taken = await session.scalars(
                update(OutboxItem)
                .where(OutboxItem.id.in_(wanted), due)
                .values(
                    status=OutboxStatus.SENDING.value,
                    claimed_by=self.token,
                    lease_until=now + self._lease,
                    attempts=OutboxItem.attempts + 1,
                )
                .returning(OutboxItem.id)
                .execution_options(synchronize_session=False)
            )
            claimed = set(taken)
        if gone:
            log.info("outbox: took back the claims of %d dispatcher(s) gone", len(gone))
        return [item_id for item_id in wanted if item_id in claimed]

    async def _renew(self, ids: Sequence[int]) -> set[int]:
        """A fresh lease for the batch's rows still to go; returns those still ours."""
        now = self._clock.now()
        async with self._sessions.begin() as session:
            kept = await session.scalars(
                update(OutboxItem)
                .where(OutboxItem.id.in_(ids), self._held())
                .values(lease_until=now + self._lease)
                .returning(OutboxItem.id)
                .execution_options(synchronize_session=False)
            )
            return set(kept)

    async def _load(self, item_id: int) -> OutgoingMessage:
        (message,) = await self._load_many([item_id])
        return message

    async def _load_many(self, ids: list[int]) -> list[OutgoingMessage]:
        """The claimed rows as messages, in the order given, in one query."""
        if not ids:
            return []
        async with self._sessions() as session:
            rows = await session.execute(
                select(OutboxItem, Request.reference)
                .outerjoin(Request, Request.id == OutboxItem.request_id)
                .where(OutboxItem.id.in_(ids))
            )
            found = {
                item.id: OutgoingMessage(
                    id=item.id,
                    idempotency_key=item.idempotency_key,
                    reference=reference,
                    channel=Channel(item.channel),
                    audience=Audience(item.audience),
                    address=self._vault.decrypt(item.address_enc),
                    template=item.template,
                    language=item.language,
                    params=self._vault.decrypt_json(item.params_enc) or {},
                    attempt=item.attempts,
                    request_id=item.request_id,
                )
                for item, reference in rows.all()
            }
        return [found[item_id] for item_id in ids if item_id in found]

    async def run_once(self) -> int:
        """Deliver what is due now; returns how many rows were handled."""
        async with self._running:
            # Vouched for before anything is claimed, so no one takes this one for dead.
            await self._owners.hold(self.token)
            await self._record_unrecorded()
            claimed = await self._claim()
            messages = await self._load_many(claimed)
            for route, port in self._ports.items():
                # A port may read what the whole batch needs at once (PreparingPort).
                if isinstance(port, PreparingPort):
                    await port.prepare([m for m in messages if m.channel is route])
            await self._deliver_batch(messages)
            return len(claimed)

    async def _deliver_batch(self, messages: list[OutgoingMessage]) -> None:
        # The claim is renewed as the batch goes, so it never outlives its lease while
        # this dispatcher works on it: each delivery starts with 3/4 of a lease ahead.
        renew_every = self._lease / 4
        renew_at = self._clock.now() + renew_every
        for index, message in enumerate(messages):
            if self._clock.now() >= renew_at:
                ahead = messages[index:]
                kept = await self._renew([m.id for m in ahead])
                for lost in (m for m in ahead if m.id not in kept):
                    log.warning(
                        "outbox %s: its claim was taken by another dispatcher; not sent here",
                        lost.id,
                        extra={"reference": lost.reference},
                    )
                renew_at = self._clock.now() + renew_every
                if message.id not in kept:
                    continue
            await self._deliver(message)

    async def _deliver(self, message: OutgoingMessage) -> None:
        port = self._ports[message.channel]
        channel = message.channel.value
        try:
            receipt = await port.deliver(message)
        except RetryLater as exc:
            count_delivery(channel, "retried")
            await self._retry(message, str(exc), exc.delay)
        except RecipientUnreachable as exc:
            count_delivery(channel, "unreachable")
            await self._unreachable(message, str(exc))
        except PermanentFailure as exc:
            count_delivery(channel, "failed")
            await self._fail(message, str(exc), alert=not isinstance(exc, StaffGroupClosed))
        except Exception as exc:  # a bug or an unknown error: never drop the message
            count_delivery(channel, "retried")
            log.exception(
                "outbox %s: delivery raised", message.id, extra={"reference": message.reference}
            )
            await self._retry(message, f"{type(exc).__name__}: {exc}", None)
        else:
            count_delivery(channel, "sent")
            await self._sent(message, receipt)

    async def close(self) -> None:
        """Stop holding this dispatcher's token (what it still claims is free at once)."""
        await self._record_unrecorded()
        if self._unrecorded:
            log.error(
                "outbox: %d delivered message(s) could not be recorded before stopping; "
                "they may be sent again",
                len(self._unrecorded),
            )
        await self._owners.release(self.token)

    async def _sent(self, message: OutgoingMessage, receipt: DeliveryReceipt) -> None:
        """Record a delivery, trying again a few times: a send the database missed is never
        sent again by this process (it is kept in memory until the database takes it)."""
        self._unrecorded[message.id] = (message, receipt)
        for wait in (*self._recording_pauses, None):
            try:
                await self._record_sent(message, receipt)
            except Exception:
                if wait is None:
                    log.error(
                        "outbox %s was delivered but cannot be recorded; kept to be recorded "
                        "later, not sent again",
                        message.id,
                        extra={"reference": message.reference},
                    )
                    raise
                log.warning(
                    "outbox %s was delivered but recording it failed; trying again in %g s",
                    message.id,
                    wait,
                    exc_info=True,
                    extra={"reference": message.reference},
                )
                await self._pause(wait)
            else:
                del self._unrecorded[message.id]
                return

    async def _record_unrecorded(self) -> None:
        """Record the deliveries an earlier run could not; one that fails again waits."""
        for item_id, (message, receipt) in list(self._unrecorded.items()):
            try:
                await self._record_sent(message, receipt)
            except Exception:
                log.warning(
                    "outbox %s: recording its delivery failed again; kept, not sent again",
                    item_id,
                    exc_info=True,
                    extra={"reference": message.reference},
                )
            else:
                del self._unrecorded[item_id]

    async def _record_sent(self, message: OutgoingMessage, receipt: DeliveryReceipt) -> None:
        # Recorded at once, message by message: a crash resends at most the one in flight.
        now = self._clock.now()
        async with self._sessions.begin() as session:
            recorded = await session.scalar(
                update(OutboxItem)
                .where(OutboxItem.id == message.id, self._held())
                .values(
                    status=OutboxStatus.SENT.value,
                    sent_at=now,
                    lease_until=None,
                    last_error=None,
                    external_id=receipt.external_id,
                )
                .returning(OutboxItem.id)
                .execution_options(synchronize_session=False)
            )
            if recorded is not None and message.request_id is not None:
                session.add(
                    Message(
                        request_id=message.request_id,
                        direction="out",
                        channel=message.channel.value,
                        body_enc=self._vault.encrypt(receipt.body),
                        external_id=receipt.external_id,
                        outbox_id=message.id,
                        created_at=now,
                    )
                )
        if recorded is None:
            # The one way a message goes out twice: a delivery that outlasted its claim.
            log.error(
                "outbox %s (%s, %s) was delivered, but another dispatcher had taken its claim "
                "meanwhile: the recipient may get it twice; recorded by the claim's holder only",
                message.id,
                message.template,
                message.reference,
                extra={"reference": message.reference},
            )
            return
        log.info(
            "outbox %s sent (%s, %s)",
            message.id,
            message.template,
            message.reference,
            extra={"reference": message.reference},
        )

    async def _let_go(self, session: AsyncSession, message: OutgoingMessage, **values: Any) -> bool:
        """Change a row this dispatcher still holds; ``False`` (and a log) when it is not ours."""
        changed = await session.scalar(
            update(OutboxItem)
            .where(OutboxItem.id == message.id, self._held())
            .values(lease_until=None, **values)
            .returning(OutboxItem.id)
            .execution_options(synchronize_session=False)
        )
        if changed is None:
            log.warning(
                "outbox %s: its claim was taken by another dispatcher meanwhile; left to it",
                message.id,
                extra={"reference": message.reference},
            )
        return changed is not None

    async def _retry(self, message: OutgoingMessage, reason: str, delay: float | None) -> None:
        now = self._clock.now()
        wait = delay if delay is not None else backoff(message.attempt)
        async with self._sessions.begin() as session:
            retried = await self._let_go(
                session,
                message,
                status=OutboxStatus.PENDING.value,
                last_error=reason[:2000],
                next_attempt_at=now + timedelta(seconds=wait),
            )
        if retried:
            log.warning(
                "outbox %s: retry in %.0f s (%s)",
                message.id,
                wait,
                reason[:200],
                extra={"reference": message.reference},
            )

    async def _fail(self, message: OutgoingMessage, reason: str, *, alert: bool = True) -> None:
        """Never delivered: an audit event and, unless the group itself is closed, an alert
        there naming the request and the reason."""
        now = self._clock.now()
        async with self._sessions.begin() as session:
            failed = await self._let_go(
                session, message, status=OutboxStatus.FAILED.value, last_error=reason[:2000]
            )
            if failed:
                await self._report_failure(session, message, now, reason, alert=alert)
        if failed:
            log.error(
                "outbox %s failed for good: %s",
                message.id,
                reason[:200],
                extra={"reference": message.reference},
            )

    async def _report_failure(
        self,
        session: AsyncSession,
        message: OutgoingMessage,
        now: datetime,
        reason: str,
        *,
        alert: bool,
    ) -> None:
        """The audit event of a failed delivery and, unless the group itself is closed (or
        the failed message was an alert), the staff group's notice naming the reason."""
        if message.request_id is None:
            return
        record_event(
            session,
            request_id=message.request_id,
            reference=message.reference,
            at=now,
            channel=message.channel.value,
            action="delivery_failed",
            details={
                "template": message.template,
                "audience": message.audience.value,
                "reason": reason[:200],
            },
        )
        if alert and message.template not in ALERTS:
            to_person = message.audience is Audience.SUBJECT
            await enqueue(
                session,
                self._vault,
                now,
                key=f"{message.idempotency_key}/failed",
                channel=Channel.TELEGRAM,
                audience=Audience.STAFF_GROUP,
                template="staff_delivery_failed" if to_person else "staff_post_failed",
                language="en",
                params={
                    "reference": message.reference,
                    "template": message.template,
                    "reason": reason[:200],
                },
                request_id=message.request_id,
            )

    async def _unreachable(self, message: OutgoingMessage, reason: str) -> None:
        """Telegram said the person blocked us: mark them, and use e-mail if we can.

        A staff member's direct message that cannot be delivered goes to the group.
        """
        now = self._clock.now()
        fallback = False
        async with self._sessions.begin() as session:
            if not await self._let_go(
                session, message, status=OutboxStatus.FAILED.value, last_error=reason[:2000]
            ):
                return
            if message.audience is Audience.STAFF_USER:
                # The assignee never started the bot (or blocked it): the group hears instead.
                fallback = True
                await enqueue(
                    session,
                    self._vault,
                    now,
                    key=f"{message.idempotency_key}/group",
                    channel=Channel.TELEGRAM,
                    audience=Audience.STAFF_GROUP,
                    template=message.template,
                    language=message.language,
                    params=message.params,
                    request_id=message.request_id,
                )
            subject = None
            if message.request_id is not None and message.audience is Audience.SUBJECT:
                request = await session.get_one(Request, message.request_id)
                subject = await session.get_one(DataSubject, request.subject_id)
            if subject is not None and message.channel is Channel.TELEGRAM:
                subject.telegram_unreachable = True
                email = self._vault.decrypt(subject.email_enc)
                if email is not None:
                    fallback = True
                    await enqueue(
                        session,
                        self._vault,
                        now,
                        key=f"{message.idempotency_key}/email",
                        channel=Channel.EMAIL,
                        audience=Audience.SUBJECT,
                        template=message.template,
                        language=message.language,
                        params=message.params,
                        address=email,
                        request_id=message.request_id,
                    )
            if not fallback:
                # Marked, so that a later verified address gets it (reroute_unreachable).
                await session.execute(
                    update(OutboxItem)
                    .where(OutboxItem.id == message.id)
                    .values(last_error=(UNREACHABLE_MARK + reason)[:2000])
                    .execution_options(synchronize_session=False)
                )
                await self._report_failure(
                    session, message, now, UNREACHABLE_MARK + reason, alert=True
                )
        if not fallback:
            log.error(
                "outbox %s failed for good: %s",
                message.id,
                (UNREACHABLE_MARK + reason)[:200],
                extra={"reference": message.reference},
            )
