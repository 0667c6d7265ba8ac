"""Picks the language of every update: the person's choice, else Telegram's, else English."""

from __future__ import annotations

import gettext
from pathlib import Path
from typing import Any

from aiogram import Bot
from aiogram.fsm.storage.base import BaseStorage, StorageKey
from aiogram.types import Chat, TelegramObject, User
from aiogram.utils.i18n import I18n, I18nMiddleware

from bot.config import BotConfig
from bot.texts import Texts
from workflows.i18n import LANGUAGES, catalogue, pick_language

PREFS = "prefs"
LOCALES = Path(__file__).resolve().parent.parent / "workflows" / "locales"


def prefs_key(bot: Bot, user_id: int) -> StorageKey:
    """Where a person's remembered choices live (apart from the dialog's state)."""
    return StorageKey(bot_id=bot.id, chat_id=user_id, user_id=user_id, destiny=PREFS)


async def remember_language(storage: BaseStorage, bot: Bot, user_id: int, language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}")
    await storage.update_data(prefs_key(bot, user_id), {"language": language})


class CatalogueI18n(I18n):
    """aiogram's i18n core fed from the shared catalogue (the .po files, compiled in memory)."""

    def __init__(self) -> None:
        super().__init__(path=LOCALES, default_locale="en", domain="bot")

    def find_locales(self) -> dict[str, gettext.GNUTranslations]:
        return catalogue().translations()


class LanguageMiddleware(I18nMiddleware):
    """Sets aiogram's i18n locale for each update and hands handlers ``texts`` in it."""

    def __init__(self, config: BotConfig) -> None:
        super().__init__(CatalogueI18n())
        self._config = config

    async def get_locale(self, event: TelegramObject, data: dict[str, Any]) -> str:
        user: User | None = data.get("event_from_user")
        chat: Chat | None = data.get("event_chat")
        storage: BaseStorage = data["fsm_storage"]
        bot: Bot = data["bot"]
        if chat is not None and chat.id == self._config.staff_chat_id:
            language = self._config.staff_language
        elif user is not None:
            prefs = await storage.get_data(prefs_key(bot, user.id))
            data[PREFS] = prefs  # read once per update: bot.reachability looks at it too
            stored = prefs.get("language")
            language = stored if stored in LANGUAGES else pick_language(user.language_code)
        else:
            language = "en"
        data["language"] = language
        data["texts"] = Texts(language, self._config.info)
        return language
