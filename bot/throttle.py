"""Messages per minute per chat: past the limit, one polite answer, then silence for the window.

The counts live in this process's memory (a sliding window of the updates
let through, measured on the injected clock): a restart forgets them, and with
several webhook replicas each counts the updates it received. That is enough
for a per-minute rate; the limits that must hold across processes (open
requests, codes sent) are counted in the database by ``workflows.requests.limits``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import Chat, TelegramObject, Update

from bot.config import BotConfig
from bot.texts import Texts
from workflows.clock import Clock

log = logging.getLogger(__name__)

WINDOW = timedelta(minutes=1)
# Chats whose windows are empty are forgotten once this many are tracked.
_TIDY_AT = 10_000


@dataclass
class _Window:
    let_through: deque[datetime] = field(default_factory=deque)
    warned: bool = False


class ChatThrottle(BaseMiddleware):
    """An outer ``update`` middleware: drops a chat's updates beyond the per-minute limit."""

    def __init__(self, config: BotConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._windows: dict[int, _Window] = {}

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        chat: Chat | None = data.get("event_chat")
        if not isinstance(event, Update) or chat is None or chat.id == self._config.staff_chat_id:
            return await handler(event, data)
        if event.message is None and event.callback_query is None:
            return await handler(event, data)
        now = self._clock.now()
        window = self._windows.setdefault(chat.id, _Window())
        while window.let_through and window.let_through[0] <= now - WINDOW:
            window.let_through.popleft()
        if len(window.let_through) < self._config.messages_per_minute:
            window.let_through.append(now)
            window.warned = False
            if len(self._windows) > _TIDY_AT:
                self._tidy(now)
            return await handler(event, data)
        seconds = max(1, math.ceil((window.let_through[0] + WINDOW - now).total_seconds()))
        first = not window.warned
        window.warned = True
        log.info("chat %s over %s updates a minute: dropped", chat.id, len(window.let_through))
        await self._answer(event, data, seconds, first)
        return None

    async def _answer(
        self, update: Update, data: dict[str, Any], seconds: int, first: bool
    ) -> None:
        texts: Texts | None = data.get("texts")
        text = texts("limits.slow_down", seconds=seconds) if texts is not None else None
        try:
            if update.callback_query is not None:
                # A button press is always answered, or its spinner turns for a while.
                if first and text:
                    await update.callback_query.answer(text, show_alert=True)
                else:
                    await update.callback_query.answer()
            elif update.message is not None and first and text:
                await update.message.answer(text)
        except Exception:  # an answer that cannot go is not worth failing the update over
            log.debug("could not answer a throttled update", exc_info=True)

    def _tidy(self, now: datetime) -> None:
        stale = [
            chat_id
            for chat_id, window in self._windows.items()
            if not window.let_through or window.let_through[-1] <= now - WINDOW
        ]
        for chat_id in stale:
            del self._windows[chat_id]
