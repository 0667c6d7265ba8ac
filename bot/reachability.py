"""Reachability is a fact of the moment: a 403 marks a person unreachable until they write again.

When Telegram refuses a message to a person (they blocked the bot), the outbox
marks them unreachable in the database, and the port leaves a mark in their
remembered choices (the dialog storage's ``prefs`` record). Every update reads
that record anyway to pick its language, so the next message or button press
from them finds the mark at no cost; only then is the database told that they
can be reached again, and the mark goes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.fsm.storage.base import BaseStorage
from aiogram.types import Chat, TelegramObject, User

from bot.language import PREFS, prefs_key
from workflows.requests.service import RequestService

log = logging.getLogger(__name__)

MARK = "unreachable"


async def mark_unreachable(storage: BaseStorage, bot: Bot, user_id: int) -> None:
    """Leaves the mark that the person's next update looks for."""
    await storage.update_data(prefs_key(bot, user_id), {MARK: True})


class ReachableAgain(BaseMiddleware):
    """An outer ``update`` middleware, after the language: a marked person who writes is
    reachable again (one database write, only for them)."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user: User | None = data.get("event_from_user")
        chat: Chat | None = data.get("event_chat")
        # The record the language middleware read for this update: no read of our own.
        prefs: dict[str, Any] = data.get(PREFS) or {}
        if prefs.get(MARK) and user is not None and chat is not None and chat.type == "private":
            service: RequestService = data["service"]
            await service.telegram_reachable(user.id)
            storage: BaseStorage = data["fsm_storage"]
            rest = {name: value for name, value in prefs.items() if name != MARK}
            await storage.set_data(prefs_key(data["bot"], user.id), rest)
            data[PREFS] = rest
            log.info("a person unreachable on Telegram wrote again: reachable now")
        return await handler(event, data)
