"""/language: the person picks the bot's language, remembered apart from any dialog."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.filters import Command
from aiogram.fsm.storage.base import BaseStorage
from aiogram.types import CallbackQuery, Message

from bot.callbacks import LanguageChoice
from bot.config import BotConfig
from bot.dialog import keyboards
from bot.language import remember_language
from bot.texts import Texts
from workflows.i18n import LANGUAGES


async def language(message: Message, texts: Texts) -> None:
    await message.answer(texts("language.pick"), reply_markup=keyboards.languages())


async def language_chosen(
    query: CallbackQuery,
    callback_data: LanguageChoice,
    bot: Bot,
    fsm_storage: BaseStorage,
    config: BotConfig,
) -> None:
    if callback_data.code not in LANGUAGES:
        await query.answer()
        return
    await remember_language(fsm_storage, bot, query.from_user.id, callback_data.code)
    await query.answer()
    chosen = Texts(callback_data.code, config.info)
    if isinstance(query.message, Message):
        await query.message.edit_text(chosen("language.set"))


def setup() -> Router:
    router = Router(name=__name__)
    router.message.register(language, Command("language"))
    router.callback_query.register(language_chosen, LanguageChoice.filter())
    return router
