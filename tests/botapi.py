"""The Telegram Bot API stand-in the tests drive the real aiogram Bot against.

It is the one ``aina-dsr demo`` serves (:mod:`aina_dsr.demo.botapi`): one copy,
imported here under the names the tests have always used.

    async with BotAPI() as api, api.bot() as bot:
        await api.offer(api.private_message(ALICE, "/start"))
        call = await api.wait_for("sendMessage", lambda c: c.params["chat_id"] == ALICE.id)
"""

from __future__ import annotations

from aina_dsr.demo.botapi import BotAPI
from aina_dsr.demo.telegram_types import (
    BOT_ID,
    BOT_USERNAME,
    CAPTION_LIMIT,
    MAX_POLL_SECONDS,
    TEXT_LIMIT,
    TOKEN,
    Call,
    Failure,
    Person,
    StoredFile,
    visible_length,
)

__all__ = [
    "BOT_ID",
    "BOT_USERNAME",
    "CAPTION_LIMIT",
    "MAX_POLL_SECONDS",
    "TEXT_LIMIT",
    "TOKEN",
    "BotAPI",
    "Call",
    "Failure",
    "Person",
    "StoredFile",
    "visible_length",
]
