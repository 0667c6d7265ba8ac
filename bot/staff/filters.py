"""Whom the staff routers hear: the staff group, and in it the members on the staff list.

Both read the configuration from the dispatcher's data (``config``), so the
routers are built without it.
"""

from __future__ import annotations

from aiogram.filters import Filter
from aiogram.types import CallbackQuery, Chat, Message

from bot.config import BotConfig


class StaffGroup(Filter):
    """A message in the staff group, or a press on a message there."""

    async def __call__(self, event: Message | CallbackQuery, config: BotConfig) -> bool:
        chat = event.chat if isinstance(event, Message) else _chat(event)
        return chat is not None and chat.id == config.staff_chat_id


class StaffMember(Filter):
    """Sent or pressed by someone in ``DSR_STAFF_USER_IDS``."""

    async def __call__(self, event: Message | CallbackQuery, config: BotConfig) -> bool:
        user = event.from_user
        return user is not None and config.is_staff(user.id)


def _chat(query: CallbackQuery) -> Chat | None:
    return query.message.chat if query.message is not None else None
