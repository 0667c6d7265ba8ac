"""Choosing the kind: a press on one of the kinds' buttons; words instead get the menu again."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from bot.callbacks import KindChoice
from bot.dialog.flow import ask_next, offer_kinds, tell_open_limit
from bot.dialog.states import Dialog
from bot.texts import Texts
from workflows.requests.dialog_rules import chosen_kind, may_open_another, questions_of
from workflows.requests.service import RequestService


async def kind_chosen(
    query: CallbackQuery,
    callback_data: KindChoice,
    state: FSMContext,
    texts: Texts,
    service: RequestService,
) -> None:
    kind = chosen_kind(callback_data.kind)
    if kind is None:  # the dialog files only a kind the person chose
        await query.answer(texts("limits.button_unknown"))
        return
    await query.answer()
    checked = (await state.get_data()).get("open_checked", False)
    if isinstance(query.message, Message):
        await query.message.edit_reply_markup(reply_markup=None)
        if not checked and not await may_open_another(service, query.from_user.id):
            await tell_open_limit(query.message, texts, service)
            await state.clear()
            return
    await state.set_state(Dialog.field)
    await state.set_data(
        {
            "kind": kind.value,
            "queue": questions_of(service.kinds[kind]),
            "fields": {},
            "evidence": [],
            "evidence_asked": False,
        }
    )
    assert isinstance(query.message, Message)
    await ask_next(query.message, state, texts, service)


async def kind_expected(message: Message, state: FSMContext, texts: Texts) -> None:
    await message.answer(texts("expect.button"))
    await offer_kinds(message, state, texts)


def setup() -> Router:
    router = Router(name=__name__)
    router.callback_query.register(kind_chosen, KindChoice.filter())
    router.message.register(kind_expected, StateFilter(Dialog.kind))
    return router
