"""Who is asking: the person shares their own Telegram contact, or gives an e-mail for a code.

Before filing the proof is kept for the summary; for a request filed already
(a shared card the service did not take as the sender's) it is checked at once.
"""

from __future__ import annotations

import logging

from aiogram import F, Router
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import Message, ReplyKeyboardRemove

from bot.config import BotConfig
from bot.dialog import keyboards
from bot.dialog.flow import ask_for_code, ask_next
from bot.dialog.states import Dialog
from bot.texts import Texts
from workflows.errors import DomainError
from workflows.identity import InvalidIdentifier, contact_phone, normalize_email
from workflows.requests.dialog_rules import looks_like_phone
from workflows.requests.service import RequestService

log = logging.getLogger(__name__)


async def contact_shared(
    message: Message, state: FSMContext, texts: Texts, service: RequestService, config: BotConfig
) -> None:
    assert message.contact is not None
    assert message.from_user is not None
    if message.contact.user_id != message.from_user.id:
        await message.answer(texts("identity.not_own"), reply_markup=keyboards.contact(texts))
        return
    try:
        phone = contact_phone(message.contact.phone_number)
    except InvalidIdentifier:
        await message.answer(texts("identity.not_own"), reply_markup=keyboards.contact(texts))
        return
    reference = (await state.get_data()).get("reference")
    if reference:  # a request filed already waits for this proof
        try:
            await service.verify_by_contact(
                str(reference),
                sender_user_id=message.from_user.id,
                contact_user_id=message.contact.user_id,
                phone=phone,
            )
        except DomainError:
            log.warning("verifying a filed request by a shared contact was refused")
            await message.answer(texts("error.try_later"), reply_markup=ReplyKeyboardRemove())
            await state.clear()
            return
        await state.clear()
        config.outbox_wake.set()
        await message.answer(texts("code.ok"), reply_markup=ReplyKeyboardRemove())
        return
    # The card's own user id is kept with its number: the request service, not this
    # dialog's memory, decides at filing whether the card was the sender's.
    proof = {"method": "contact", "phone": phone, "user_id": message.contact.user_id}
    await state.update_data(proof=proof)
    await ask_next(message, state, texts, service)


async def identity_text(
    message: Message, state: FSMContext, texts: Texts, service: RequestService, config: BotConfig
) -> None:
    assert message.from_user is not None
    text = (message.text or "").strip()
    if "@" not in text:
        msgid = "identity.typed_phone" if looks_like_phone(text) else "identity.expect"
        await message.answer(texts(msgid), reply_markup=keyboards.contact(texts))
        return
    try:
        email = normalize_email(text)
    except InvalidIdentifier:
        await message.answer(texts("identity.bad_email"))
        return
    reference = (await state.get_data()).get("reference")
    if not reference:
        await state.update_data(proof={"method": "email", "email": email})
        await ask_next(message, state, texts, service)
        return
    try:  # a request filed already waits for this proof
        await ask_for_code(
            message.answer,
            state,
            texts,
            service,
            config,
            str(reference),
            email,
            message.from_user.id,
        )
    except DomainError:
        log.warning("a code for a filed request was refused")
        await state.clear()
        await message.answer(texts("error.try_later"))


async def identity_other(message: Message, texts: Texts) -> None:
    await message.answer(texts("identity.expect"), reply_markup=keyboards.contact(texts))


def setup() -> Router:
    router = Router(name=__name__)
    router.message.register(contact_shared, StateFilter(Dialog.identity), F.contact)
    router.message.register(identity_text, StateFilter(Dialog.identity), F.text)
    router.message.register(identity_other, StateFilter(Dialog.identity))
    return router
