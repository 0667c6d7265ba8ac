"""A person unreachable on Telegram is so only until they write again (a mixin of the service).

Telegram's 403 (the person blocked the bot) marks them unreachable, so what
follows goes by e-mail where an address is known (:func:`workflows.outbox.queue.subject_route`).
Their next message or button press shows they can be reached again: the bot
calls :meth:`Reachability.telegram_reachable`, and Telegram is their channel
once more.
"""

from __future__ import annotations

from sqlalchemy import update

from workflows.persistence.tables import DataSubject
from workflows.requests.records import Records


class Reachability(Records):
    """The request service's use-case of a person coming back to the bot (a mixin)."""

    async def telegram_reachable(self, telegram_user_id: int) -> bool:
        """The person wrote to the bot: Telegram reaches them again. True if they were marked."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(DataSubject)
                .where(
                    DataSubject.telegram_user_id == telegram_user_id,
                    DataSubject.telegram_unreachable.is_(True),
                )
                .values(telegram_unreachable=False)
                .execution_options(synchronize_session=False)
            )
        return bool(getattr(result, "rowcount", 0))
