"""The kind's questions, one at a time: each answer fills its field, then the next is asked."""

from __future__ import annotations

from typing import Any

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import Message

from bot.config import BotConfig
from bot.dialog.flow import ask_next
from bot.dialog.states import Dialog
from bot.texts import Texts
from workflows.kinds import RequestKind
from workflows.requests.dialog_rules import answer
from workflows.requests.service import RequestService


async def field_answer(
    message: Message, state: FSMContext, texts: Texts, service: RequestService, config: BotConfig
) -> None:
    text = (message.text or "").strip()
    if len(text) > config.max_text:
        await message.answer(texts("too_long", limit=config.max_text))
        return
    data = await state.get_data()
    queue: list[str] = list(data.get("queue", []))
    if not queue:
        await ask_next(message, state, texts, service)
        return
    name = queue.pop(0)
    fields: dict[str, Any] = dict(data.get("fields", {}))
    filled = answer(name, text)
    if filled is None:
        queue.insert(0, name)  # a blank answer: the same question again
    else:
        fields.update(filled)
    await state.update_data(queue=queue, fields=fields)
    await ask_next(message, state, texts, service)


async def field_not_text(
    message: Message, state: FSMContext, texts: Texts, service: RequestService
) -> None:
    data = await state.get_data()
    queue = data.get("queue", [])
    spec = service.kinds[RequestKind(data["kind"])]
    question = (spec.question(queue[0]) or "") if queue else ""
    await message.answer(texts("expect.text", question=texts(question) if question else ""))


def setup() -> Router:
    router = Router(name=__name__)
    router.message.register(field_answer, StateFilter(Dialog.field), F.text)
    router.message.register(field_not_text, StateFilter(Dialog.field))
    return router
