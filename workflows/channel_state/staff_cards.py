"""Which message in the staff group is a request's card, so the card is edited in place."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workflows.clock import Clock
from workflows.persistence.tables import StaffCard
from workflows.persistence.upsert import upsert


@dataclass(frozen=True)
class CardMessage:
    """Where a card sits: the chat and the message in it."""

    chat_id: int
    message_id: int


class StaffCards:
    """The staff cards' messages, one per request, in ``staff_card``."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    async def find(self, request_id: int) -> CardMessage | None:
        """The message that is the request's card, or None before one was posted."""
        async with self._sessions() as session:
            return await card_message(session, request_id)

    async def write(
        self, session: AsyncSession, request_id: int, chat_id: int, message_id: int
    ) -> None:
        """Records a message just posted as the request's card (replacing an older one).

        In the caller's transaction: the outbox writes it with the delivery's record.
        """
        now = self._clock.now()
        statement = upsert(session, StaffCard).values(
            request_id=request_id, chat_id=chat_id, message_id=message_id, updated_at=now
        )
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["request_id"],
                set_={"chat_id": chat_id, "message_id": message_id, "updated_at": now},
            )
        )


async def card_message(session: AsyncSession, request_id: int) -> CardMessage | None:
    """:meth:`StaffCards.find` in the caller's session (the card's other reads)."""
    card = await session.get(StaffCard, request_id)
    return CardMessage(card.chat_id, card.message_id) if card is not None else None
