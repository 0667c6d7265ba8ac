"""/start: a new request from the beginning, unless the person has too many open already."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.types import Message, ReplyKeyboardRemove

from bot.dialog.flow import offer_kinds, tell_open_limit
from bot.dialog.states import Dialog
from bot.texts import Texts
from workflows.requests.dialog_rules import may_open_another
from workflows.requests.service import RequestService


async def start(message: Message, state: FSMContext, texts: Texts, service: RequestService) -> None:
    assert message.from_user is not None
    may_open = await may_open_another(service, message.from_user.id)
    await state.clear()
    if may_open:
        # Checked here for this dialog: the kind's button need not count again.
        await state.set_state(Dialog.kind)
        await state.set_data({"open_checked": True})
    await message.answer(texts("start.greeting"), reply_markup=ReplyKeyboardRemove())
    if not may_open:
        await tell_open_limit(message, texts, service)
        return
    await offer_kinds(message, state, texts)


def setup() -> Router:
    router = Router(name=__name__)
    router.message.register(start, CommandStart())
    return router
