"""How a dispatcher claims outbox rows: under its token, for a lease, freed at once when it dies.

- A claim carries the dispatcher's owner token and a lease (two minutes).
  Every later change of the row (sent, failed, retry) is made only while the
  row is still that token's claim (:func:`held_by`).
- The lease of the rows still to go is renewed as a batch is delivered
  (:meth:`OutboxClaims.renew`), so a claim never outlives its lease while its
  owner works.
- A claim whose owner is dead is taken back at once, not after the lease: see
  :mod:`workflows.outbox.owners` (on SQLite one process owns the outbox, so a
  restarted desk takes back everything it did not claim itself; on PostgreSQL
  each owner holds an advisory lock that dies with its connection).
- A person's notice held by an update (:mod:`workflows.outbox.holds`) is due
  after its hold; the dispatcher its update released it to claims it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, bindparam, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.outbox.holds import NoticeHolds
from workflows.outbox.owners import ClaimOwners
from workflows.outbox.queue import Audience, Channel, OutboxStatus, OutgoingMessage
from workflows.persistence.tables import OutboxItem, Request
from workflows.privacy.vault import Vault

log = logging.getLogger(__name__)


def held_by(token: str) -> ColumnElement[bool]:
    """The row is still the claim of the dispatcher with this owner token."""
    return and_(OutboxItem.claimed_by == token, OutboxItem.status == OutboxStatus.SENDING.value)


# Built once, the values given as parameters: building a statement anew costs more than
# running it (BENCHMARKS.md section 6, fifth session), and every round runs these.
_OTHER_HOLDERS = (
    select(OutboxItem.claimed_by)
    .where(
        OutboxItem.status == OutboxStatus.SENDING.value,
        OutboxItem.channel.in_(bindparam("channels", expanding=True)),
        OutboxItem.lease_until > bindparam("now"),
        OutboxItem.claimed_by != bindparam("token"),
    )
    .distinct()
)
_ROWS = (
    select(OutboxItem, Request.reference)
    .outerjoin(Request, Request.id == OutboxItem.request_id)
    .where(OutboxItem.id.in_(bindparam("ids", expanding=True)))
)


class OutboxClaims:
    """Claims, renews and reads the rows of one dispatcher (one owner token)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        clock: Clock,
        owners: ClaimOwners,
        *,
        token: str,
        channels: Collection[Channel],
        lease: timedelta,
        batch: int,
        holds: NoticeHolds | None = None,
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._clock = clock
        self._owners = owners
        self._token = token
        self._channels = [channel.value for channel in channels]
        self._lease = lease
        self._batch = batch
        self._holds = holds

    async def claim(self, exclude: Collection[int] = ()) -> list[OutgoingMessage]:
        """Claim up to a batch of due rows (not those in ``exclude``), oldest first.

        The rows claimed are read as messages in the claim's own transaction.

        Due: pending and their time has come or released to this dispatcher (a held
        notice whose update's dialog writes are committed), or claimed by a dispatcher
        whose lease ran out or which is known to be dead, or by this one (its last run
        stopped midway: runs are serial).
        """
        now = self._clock.now()
        token = self._token
        channels = OutboxItem.channel.in_(self._channels)
        async with self._sessions() as session:
            holders = await session.scalars(
                _OTHER_HOLDERS, {"channels": self._channels, "now": now, "token": token}
            )
            others = {holder for holder in holders if holder is not None}
        gone = await self._owners.gone(others) if others else set()
        released = self._holds.released() if self._holds is not None else frozenset()
        due, in_turn = self._due(now, gone, released)
        unsent = OutboxItem.id.not_in(list(exclude))
        async with self._sessions.begin() as session:
            rows = await session.scalars(
                select(OutboxItem.id)
                .where(due, channels, unsent)
                .order_by(in_turn, OutboxItem.id)
                .limit(self._batch)
            )
            wanted = list(rows)
            if not wanted:
                self._forget(released, wanted)
                return []
            # One UPDATE for the batch; ``due`` again, so a row another dispatcher took
            # meanwhile (PostgreSQL re-reads a row it waited for) is not taken twice.
            taken = await session.scalars(
                update(OutboxItem)
                .where(OutboxItem.id.in_(wanted), due)
                .values(
                    status=OutboxStatus.SENDING.value,
                    claimed_by=token,
                    lease_until=now + self._lease,
                    attempts=OutboxItem.attempts + 1,
                )
                .returning(OutboxItem.id)
                .execution_options(synchronize_session=False)
            )
            claimed = set(taken)
            ids = [item_id for item_id in wanted if item_id in claimed]
            loaded = await self._rows(session, ids)
        self._forget(released, wanted, claimed)
        if gone:
            log.info("outbox: took back the claims of %d dispatcher(s) gone", len(gone))
        return self._messages(loaded, ids)

    def _due(
        self, now: datetime, gone: Collection[str], released: frozenset[int]
    ) -> tuple[ColumnElement[bool], ColumnElement[Any]]:
        """Which rows are due for this dispatcher, and the order they go in."""
        token = self._token
        sending = OutboxItem.status == OutboxStatus.SENDING.value
        pending = OutboxItem.status == OutboxStatus.PENDING.value
        # A held notice whose update released it to this dispatcher goes at once, in
        # its place among the others as if it had never been held.
        now_or_released: ColumnElement[bool] = OutboxItem.next_attempt_at <= now
        in_turn: ColumnElement[Any] = OutboxItem.next_attempt_at.expression
        if released:
            now_or_released = or_(now_or_released, OutboxItem.id.in_(released))
            in_turn = case(
                (OutboxItem.id.in_(released), OutboxItem.created_at),
                else_=OutboxItem.next_attempt_at,
            )
        due = or_(
            and_(pending, now_or_released),
            # A dispatcher that died mid-delivery left its lease behind...
            and_(sending, OutboxItem.lease_until <= now),
            # ...or is known to be dead already (its claims are free at once)...
            and_(sending, OutboxItem.claimed_by.in_(gone)),
            # ...or it is this one, whose last run stopped midway (runs are serial).
            held_by(token),
        )
        return due, in_turn

    def _forget(
        self, released: frozenset[int], wanted: list[int], claimed: Collection[int] = ()
    ) -> None:
        """Released notices claimed now, or all of them when the batch had room for every
        due row: one not among them waits no more (sent, or never committed)."""
        if self._holds is None or not released:
            return
        self._holds.forget(released if len(wanted) < self._batch else released & set(claimed))

    async def renew(self, ids: Sequence[int]) -> set[int]:
        """A fresh lease for the batch's rows still to go; returns those still ours."""
        now = self._clock.now()
        async with self._sessions.begin() as session:
            kept = await session.scalars(
                update(OutboxItem)
                .where(OutboxItem.id.in_(ids), held_by(self._token))
                .values(lease_until=now + self._lease)
                .returning(OutboxItem.id)
                .execution_options(synchronize_session=False)
            )
            return set(kept)

    async def load(self, ids: list[int]) -> list[OutgoingMessage]:
        """The claimed rows as messages, in the order given, in one query."""
        if not ids:
            return []
        async with self._sessions() as session:
            found = await self._rows(session, ids)
        return self._messages(found, ids)

    async def _rows(self, session: AsyncSession, ids: list[int]) -> Sequence[Row[OutboxItem, str]]:
        if not ids:
            return []
        rows = await session.execute(_ROWS, {"ids": ids})
        return rows.all()

    def _messages(
        self, rows: Sequence[Row[OutboxItem, str]], ids: list[int]
    ) -> list[OutgoingMessage]:
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
            for item, reference in rows
        }
        return [found[item_id] for item_id in ids if item_id in found]
