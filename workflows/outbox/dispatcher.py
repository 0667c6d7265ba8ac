"""The outbox's delivery pass: claimed rows handed to their channel, each outcome recorded.

A dispatcher claims due rows (:mod:`workflows.outbox.claims`), hands each to
the channel's :class:`~workflows.outbox.queue.OutboundPort`, and records what
happened: sent here, anything else in :mod:`workflows.outbox.failures`.
Delivery is at-least-once, and a message is sent once in all but one case:

- The claim never outlives its lease while its owner works: the lease of the
  rows still to go is renewed every quarter of a lease, so each delivery
  starts with three quarters of a lease ahead (a delivery hung longer than
  that is the one way to a double, and it is logged as an error when its
  recording finds the claim taken).
- A delivery the database fails to record is recorded again a few times, then
  kept in memory and recorded before the next claim: the same process never
  sends it again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.metrics import count_delivery, counted_round
from workflows.outbox.claims import OutboxClaims, held_by
from workflows.outbox.failures import DeliveryFailures
from workflows.outbox.holds import NoticeHolds
from workflows.outbox.owners import ClaimOwners, LeaseOnly
from workflows.outbox.queue import (
    Channel,
    DeliveryReceipt,
    OutboundPort,
    OutboxStatus,
    OutgoingMessage,
    PermanentFailure,
    PreparingPort,
    RecipientUnreachable,
    RetryLater,
    StaffGroupClosed,
)
from workflows.persistence.tables import Message, OutboxItem
from workflows.privacy.vault import Vault

log = logging.getLogger(__name__)


class OutboxDispatcher:
    """Claims due outbox rows and hands them to the channel that delivers them.

    ``run_once`` is serial (a lock makes it so): a row this dispatcher still
    holds when a run starts was left by an earlier run that failed midway, and
    is taken up again. Deliveries the database could not record are kept in
    memory, recorded at the start of each run, and never claimed again.

    ``holds``: the person's notices held by this process's updates
    (:mod:`workflows.outbox.holds`), claimed at once when their update releases them.
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
        holds: NoticeHolds | None = None,
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._ports = dict(ports)
        self._lease = lease
        self._owners: ClaimOwners = owners or LeaseOnly()
        self.token = token or secrets.token_hex(16)
        self._claims = OutboxClaims(
            sessions,
            vault,
            clock,
            self._owners,
            token=self.token,
            channels=list(self._ports),
            lease=lease,
            batch=batch,
            holds=holds,
        )
        self._failures = DeliveryFailures(sessions, vault, clock, token=self.token)
        self._recording_pauses = tuple(recording_pauses)
        self._pause = pause
        # Delivered, but the database did not take the record yet: never to be sent again.
        self._unrecorded: dict[int, tuple[OutgoingMessage, DeliveryReceipt]] = {}
        self._running = asyncio.Lock()
        # Its rounds, as /metrics counts them: "outbox email", "outbox telegram".
        self.loop_name = "outbox " + "+".join(sorted(str(channel) for channel in self._ports))

    async def _claim(self) -> list[OutgoingMessage]:
        # What this process delivered already is recorded, never claimed to be sent again.
        return await self._claims.claim(exclude=list(self._unrecorded))

    async def _load(self, item_id: int) -> OutgoingMessage:
        (message,) = await self._claims.load([item_id])
        return message

    async def run_once(self) -> int:
        """Deliver what is due now; returns how many rows were handled."""
        async with self._running:
            with counted_round(self.loop_name):
                # Vouched for before anything is claimed, so no one takes this one for dead.
                await self._owners.hold(self.token)
                await self._record_unrecorded()
                messages = await self._claim()
                for route, port in self._ports.items():
                    # A port may read what the whole batch needs at once (PreparingPort).
                    if isinstance(port, PreparingPort):
                        await port.prepare([m for m in messages if m.channel is route])
                await self._deliver_batch(messages)
                return len(messages)

    async def _deliver_batch(self, messages: list[OutgoingMessage]) -> None:
        # The claim is renewed as the batch goes, so it never outlives its lease while
        # this dispatcher works on it: each delivery starts with 3/4 of a lease ahead.
        renew_every = self._lease / 4
        renew_at = self._clock.now() + renew_every
        for index, message in enumerate(messages):
            if self._clock.now() >= renew_at:
                ahead = messages[index:]
                kept = await self._claims.renew([m.id for m in ahead])
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
            await self._failures.retry(message, str(exc), exc.delay)
        except RecipientUnreachable as exc:
            count_delivery(channel, "unreachable")
            await self._failures.unreachable(message, str(exc))
        except PermanentFailure as exc:
            count_delivery(channel, "failed")
            alert = not isinstance(exc, StaffGroupClosed)
            await self._failures.fail(message, str(exc), alert=alert)
        except Exception as exc:  # a bug or an unknown error: never drop the message
            count_delivery(channel, "retried")
            log.exception(
                "outbox %s: delivery raised", message.id, extra={"reference": message.reference}
            )
            await self._failures.retry(message, f"{type(exc).__name__}: {exc}", None)
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
        # What the channel keeps about it (a card's place) is written in the same commit.
        now = self._clock.now()
        async with self._sessions.begin() as session:
            recorded = await session.scalar(
                update(OutboxItem)
                .where(OutboxItem.id == message.id, held_by(self.token))
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
            if receipt.keep is not None:
                # Kept even when another dispatcher took the claim: the message went out.
                await receipt.keep(session)
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
