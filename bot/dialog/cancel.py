"""/cancel: the person withdraws one of their open requests, after saying yes once more."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from bot.callbacks import CancelPick
from bot.config import BotConfig
from bot.dialog import keyboards
from bot.texts import Texts
from workflows.errors import DomainError, NotAllowed, RequestNotFound
from workflows.requests.dialog_rules import own_request
from workflows.requests.service import RequestService
from workflows.snapshots import Actor


async def cancel(message: Message, texts: Texts, service: RequestService) -> None:
    assert message.from_user is not None
    views = await service.list_requests(telegram_user_id=message.from_user.id, open_only=True)
    if not views:
        await message.answer(texts("cancel.none"))
        return
    await message.answer(texts("cancel.pick"), reply_markup=keyboards.cancellable(views))


async def cancel_pick(
    query: CallbackQuery,
    callback_data: CancelPick,
    texts: Texts,
    service: RequestService,
    config: BotConfig,
) -> None:
    reference = callback_data.reference
    try:
        await own_request(service, reference, query.from_user.id)
    except (NotAllowed, RequestNotFound):
        # A forged or mistyped reference: nothing is shown of it and nothing changes.
        await query.answer(texts("limits.not_yours"), show_alert=True)
        return
    await query.answer()
    if not isinstance(query.message, Message):
        return
    if callback_data.keep:
        await query.message.edit_text(texts("cancel.kept", reference=reference))
        return
    if not callback_data.confirm:
        await query.message.edit_text(
            texts("cancel.confirm", reference=reference),
            reply_markup=keyboards.cancel_or_keep(texts, reference),
        )
        return
    try:
        await service.cancel(reference, Actor.person_telegram(query.from_user.id))
    except DomainError:
        await query.message.edit_text(texts("cancel.failed", reference=reference))
        return
    config.outbox_wake.set()
    await query.message.edit_reply_markup(reply_markup=None)


def setup() -> Router:
    router = Router(name=__name__)
    router.message.register(cancel, Command("cancel"))
    router.callback_query.register(cancel_pick, CancelPick.filter())
    return router
