"""What becomes of a message a channel did not deliver: tried again later, or failed and told.

A passing failure (:class:`~workflows.outbox.queue.RetryLater`, or an error
nobody expected) puts the row back, due again after the delay the channel
asked for or the backoff (:func:`workflows.running.backoff`). A permanent one
fails the row for good, with an audit event and an alert in the staff group
(unless the group itself is closed, or the failed message was an alert). A
person who blocked the bot is marked unreachable and written to by e-mail
where an address is known; a staff member's direct message goes to the group.
Each change is made only while the row is still the dispatcher's claim.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.outbox.claims import held_by
from workflows.outbox.queue import (
    UNREACHABLE_MARK,
    Audience,
    Channel,
    OutboxStatus,
    OutgoingMessage,
    enqueue,
)
from workflows.persistence.tables import DataSubject, OutboxItem, Request
from workflows.privacy.audit import record_event
from workflows.privacy.vault import Vault
from workflows.running import backoff

log = logging.getLogger(__name__)

# The alerts a failed delivery raises in the staff group; never raised about themselves.
ALERTS = frozenset({"staff_delivery_failed", "staff_post_failed"})


class DeliveryFailures:
    """Records the failed deliveries of one dispatcher (one owner token)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        clock: Clock,
        *,
        token: str,
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._token = token

    async def _let_go(self, session: AsyncSession, message: OutgoingMessage, **values: Any) -> bool:
        """Change a row this dispatcher still holds; ``False`` (and a log) when it is not ours."""
        changed = await session.scalar(
            update(OutboxItem)
            .where(OutboxItem.id == message.id, held_by(self._token))
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

    async def retry(self, message: OutgoingMessage, reason: str, delay: float | None) -> None:
        """Due again after ``delay`` seconds, or the backoff of its attempts."""
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

    async def fail(self, message: OutgoingMessage, reason: str, *, alert: bool = True) -> None:
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

    async def unreachable(self, message: OutgoingMessage, reason: str) -> None:
        """Telegram said the person blocked us: mark them, and use e-mail if we can.

        A staff member's direct message that cannot be delivered goes to the group.
        """
        now = self._clock.now()
        async with self._sessions.begin() as session:
            if not await self._let_go(
                session, message, status=OutboxStatus.FAILED.value, last_error=reason[:2000]
            ):
                return
            fallback = await self._fall_back(session, message, now)
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

    async def _fall_back(
        self, session: AsyncSession, message: OutgoingMessage, now: datetime
    ) -> bool:
        """Write the message again where it can go instead; ``False`` when nowhere."""
        fallback = False
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
        return fallback
