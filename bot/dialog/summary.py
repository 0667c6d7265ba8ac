"""The summary: Send files the request, Edit asks the kind's questions again, Cancel drops it."""

from __future__ import annotations

import logging

from aiogram import Bot, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from bot.callbacks import SummaryChoice
from bot.config import BotConfig
from bot.dialog.filing import file_request
from bot.dialog.flow import ask_next
from bot.dialog.states import Dialog
from bot.texts import Texts
from workflows.errors import DomainError
from workflows.kinds import RequestKind
from workflows.requests.dialog_rules import questions_of
from workflows.requests.service import RequestService

log = logging.getLogger(__name__)


async def summary_choice(
    query: CallbackQuery,
    callback_data: SummaryChoice,
    state: FSMContext,
    texts: Texts,
    service: RequestService,
    bot: Bot,
    language: str,
    config: BotConfig,
) -> None:
    await query.answer()
    if not isinstance(query.message, Message):
        return
    if callback_data.action not in ("confirm", "edit", "cancel"):
        return
    data = await state.get_data()
    if callback_data.action == "cancel":
        await state.clear()
        await query.message.edit_text(texts("dialog.cancelled"))
        return
    if callback_data.action == "edit":
        await query.message.edit_reply_markup(reply_markup=None)
        await state.set_state(Dialog.field)
        await state.update_data(
            queue=questions_of(service.kinds[RequestKind(data["kind"])]),
            fields={},
            evidence=[],
            evidence_asked=False,
        )
        await ask_next(query.message, state, texts, service)
        return
    try:  # filing edits the summary, which takes its buttons away
        await file_request(query, data, state, texts, service, bot, language, config)
    except DomainError:
        log.exception("filing a request failed")
        await query.message.answer(texts("error.try_later"))


async def summary_expected(message: Message, texts: Texts) -> None:
    await message.answer(texts("expect.button"))


def setup() -> Router:
    router = Router(name=__name__)
    router.callback_query.register(
        summary_choice, StateFilter(Dialog.summary), SummaryChoice.filter()
    )
    router.message.register(summary_expected, StateFilter(Dialog.summary))
    return router
