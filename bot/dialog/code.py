"""The e-mailed code: the person types it; a new one on request when it expired or died."""

from __future__ import annotations

import html

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from bot.callbacks import NewCode
from bot.config import BotConfig
from bot.dialog import keyboards
from bot.dialog.states import Dialog
from bot.texts import Texts
from workflows.errors import DomainError
from workflows.identity import CodeOutcome
from workflows.privacy.masking import mask_email
from workflows.requests.dialog_rules import typed_code
from workflows.requests.limits import TooManyCodes
from workflows.requests.service import RequestService
from workflows.snapshots import Actor


async def code_typed(
    message: Message, state: FSMContext, texts: Texts, service: RequestService, config: BotConfig
) -> None:
    assert message.from_user is not None
    attempt = typed_code(message.text or "")
    if attempt is None:
        await message.answer(texts("code.format"))
        return
    reference = str((await state.get_data()).get("reference"))
    check = await service.verify_by_code(
        reference, attempt, Actor.person_telegram(message.from_user.id)
    )
    config.outbox_wake.set()
    if check.outcome is CodeOutcome.OK:
        await state.clear()
        await message.answer(texts("code.ok"))
    elif check.outcome is CodeOutcome.WRONG:
        await message.answer(texts("code.wrong", left=check.tries_left))
    else:
        msgid = "code.expired" if check.outcome is CodeOutcome.EXPIRED else "code.dead"
        await message.answer(texts(msgid), reply_markup=keyboards.new_code(texts, reference))


async def code_again(
    query: CallbackQuery,
    callback_data: NewCode,
    state: FSMContext,
    texts: Texts,
    service: RequestService,
    config: BotConfig,
) -> None:
    data = await state.get_data()
    proof = data.get("proof") or {}
    email = proof.get("email")
    if callback_data.reference != data.get("reference"):
        await query.answer(texts("limits.button_unknown"))
        return
    await query.answer()
    if not email or not isinstance(query.message, Message):
        return
    try:
        await service.send_email_code(
            callback_data.reference, Actor.person_telegram(query.from_user.id), email
        )
    except TooManyCodes as exc:
        await query.message.answer(
            texts("limits.codes", limit=exc.limit, minutes=exc.minutes),
            reply_markup=keyboards.new_code(texts, callback_data.reference),
        )
        return
    except DomainError:
        await query.message.answer(texts("error.try_later"))
        return
    config.outbox_wake.set()
    await query.message.edit_text(texts("code.sent", email=html.escape(mask_email(email))))


async def code_expected(message: Message, texts: Texts) -> None:
    await message.answer(texts("code.format"))


def setup() -> Router:
    router = Router(name=__name__)
    router.message.register(code_typed, StateFilter(Dialog.code), F.text)
    router.callback_query.register(code_again, StateFilter(Dialog.code), NewCode.filter())
    router.message.register(code_expected, StateFilter(Dialog.code))
    return router
