"""An update whose handling fails is not lost in silence: its sender is asked to send it again.

Polling moves past an update whatever became of it, so a handler that hits a
database error would drop the person's words without a trace. Nothing of it
is kept half-done: each call of the request service is one transaction that
rolls back, and the update's dialog writes are committed only once it is
handled (:mod:`bot.update_cache`). What is left is to say so, in the sender's
language: a message is answered in its chat, a button press with an alert.
The log names the update by its id and the error by its type and its place in
the code, never by a message that could carry what the person wrote.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramForbiddenError
from aiogram.types import CallbackQuery, ErrorEvent, ReplyParameters, User

from bot.config import BotConfig
from bot.texts import Texts
from workflows.i18n import pick_language

log = logging.getLogger(__name__)


def describe(error: BaseException) -> str:
    """The error's type and where it was raised, without its message (it may quote data)."""
    kinds = [type(error).__qualname__]
    cause = error.__cause__ or error.__context__
    if cause is not None:
        kinds.append(f"from {type(cause).__module__}.{type(cause).__qualname__}")
    frames = traceback.extract_tb(error.__traceback__)
    where = "".join(f"\n  {frame.filename}:{frame.lineno} in {frame.name}" for frame in frames)
    return " ".join(kinds) + where


def _texts(event: ErrorEvent, config: BotConfig, data: dict[str, Any]) -> Texts:
    """The texts the update was being handled in; before the language was known, its guess."""
    texts = data.get("texts")
    if isinstance(texts, Texts):
        return texts
    chat = data.get("event_chat")
    if chat is not None and chat.id == config.staff_chat_id:
        return Texts(config.staff_language, config.info)
    user: User | None = data.get("event_from_user")
    return Texts(pick_language(user.language_code if user else None), config.info)


async def update_failed(event: ErrorEvent, bot: Bot, config: BotConfig, **data: Any) -> bool:
    """The dispatcher's error handler: log the failure, ask the sender to send again."""
    update, error = event.update, event.exception
    if isinstance(error, TelegramBadRequest) and "message is not modified" in error.message:
        return True  # a second press of the same button: there was nothing left to do
    if isinstance(error, TelegramForbiddenError):
        log.warning("update %s: the sender blocked the bot while it was handled", update.update_id)
        return True
    log.error(
        "update %s (%s) failed; its sender is asked to send it again: %s",
        update.update_id,
        update.event_type,
        describe(error),
    )
    texts = _texts(event, config, data)
    try:
        if update.callback_query is not None:
            await _press_again(bot, update.callback_query, texts)
        elif update.message is not None:
            await bot.send_message(
                chat_id=update.message.chat.id,
                text=texts("error.send_again"),
                reply_parameters=ReplyParameters(
                    message_id=update.message.message_id, allow_sending_without_reply=True
                ),
            )
    except TelegramAPIError as exc:
        log.warning(
            "update %s: could not ask for it again (%s)", update.update_id, type(exc).__name__
        )
    return True


async def _press_again(bot: Bot, query: CallbackQuery, texts: Texts) -> None:
    try:
        await bot.answer_callback_query(query.id, text=texts("error.press_again"), show_alert=True)
    except TelegramBadRequest:  # a press too old to answer: said in its chat instead
        if query.message is None:
            raise
        await bot.send_message(chat_id=query.message.chat.id, text=texts("error.press_again"))
