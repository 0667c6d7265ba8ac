"""The card's buttons that act at once: Take, Confirm documents and Complete, one handler each.

Every action goes through the request service, which writes the audit event
(with the staff member's id and name) and queues the card's update and the
person's notice in the same transaction. Approve, Reject, Ask for info and the
kind buttons have their own routers (:mod:`bot.staff.approvals`,
:mod:`bot.staff.drafts`, :mod:`bot.staff.kinds`).
"""

from __future__ import annotations

from aiogram import F, Router
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from bot.callbacks import StaffAction
from bot.config import BotConfig
from bot.staff.answers import actor, done, refused
from bot.staff.drafts import ask_for_answer
from bot.texts import Texts
from workflows.errors import DomainError
from workflows.fulfilment.work import Fulfilment
from workflows.kinds import RequestKind
from workflows.requests.service import RequestService
from workflows.requests.staff_view import completable


async def take(
    query: CallbackQuery,
    callback_data: StaffAction,
    texts: Texts,
    config: BotConfig,
    service: RequestService,
) -> None:
    """Take: the request is the presser's to review."""
    reference = callback_data.reference
    try:
        view = await service.take(reference, actor(query.from_user))
    except DomainError as exc:
        await refused(query, exc, texts, service, reference, "take")
        return
    await done(query, texts, config, view)


async def complete(
    query: CallbackQuery,
    callback_data: StaffAction,
    state: FSMContext,
    texts: Texts,
    config: BotConfig,
    service: RequestService,
    fulfilment: Fulfilment,
) -> None:
    """Complete an approved request: the work its approvals agreed to, nothing typed now.

    A complaint approved without its answer (before answers were asked for) is
    closed only with one: the prompt for it, as Approve asks on a complaint.
    """
    reference = callback_data.reference
    try:
        current = await completable(service, reference)
        if current.kind == RequestKind.COMPLAINT.value and not (
            await service.approved_work(reference)
        ).get("answer"):
            await query.answer()
            if isinstance(query.message, Message):
                await ask_for_answer(query.message, state, texts, reference)
            return
        view = await fulfilment.fulfil(current, actor(query.from_user))
    except DomainError as exc:
        await refused(query, exc, texts, service, reference, "complete")
        return
    await done(query, texts, config, view)


async def unknown_action(query: CallbackQuery) -> None:
    """An action no handler knows (an old card's button): its spinner stops, nothing changes."""
    await query.answer()


def router() -> Router:
    """The card buttons' router; its last handler takes any action the others did not."""
    buttons = Router(name=__name__)
    buttons.callback_query.register(take, StaffAction.filter(F.action == "take"))
    buttons.callback_query.register(complete, StaffAction.filter(F.action == "complete"))
    buttons.callback_query.register(unknown_action, StaffAction.filter())
    return buttons
