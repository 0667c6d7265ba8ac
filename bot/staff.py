"""The staff group: the card's buttons, reasons by ForceReply, and the queue commands.

Only users in ``DSR_STAFF_USER_IDS`` can act; anyone else who presses a button
gets an alert and nothing changes. Every action goes through the request
service, which writes the audit event (with the staff member's id and name)
and queues the card's update and the person's notice in the same transaction.
"""

from __future__ import annotations

import html
import logging
import statistics
from datetime import timedelta

from aiogram import F, Router
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, ForceReply, Message, User

from bot.callbacks import StaffAction
from bot.cards import OutboxRenderer
from bot.config import BotConfig
from bot.texts import Texts
from workflows.clock import Clock
from workflows.errors import ConcurrentChange, DomainError, IllegalTransition, RequestNotFound
from workflows.i18n import format_date, kind_name, status_name
from workflows.service import RequestService
from workflows.views import Actor, RequestView

log = logging.getLogger(__name__)
LIST_LIMIT = 30


class StaffInput(StatesGroup):
    reason = State()


def _actor(user: User) -> Actor:
    return Actor.staff(user.id, user.full_name)


def setup(config: BotConfig, renderer: OutboxRenderer, clock: Clock) -> Router:
    router = Router(name=__name__)
    router.message.filter(F.chat.id == config.staff_chat_id)
    router.callback_query.filter(F.message.chat.id == config.staff_chat_id)

    @router.callback_query(StaffAction.filter())
    async def pressed(
        query: CallbackQuery,
        callback_data: StaffAction,
        state: FSMContext,
        texts: Texts,
        service: RequestService,
    ) -> None:
        if not config.is_staff(query.from_user.id):
            await query.answer(texts("staff.not_allowed"), show_alert=True)
            return
        reference = callback_data.reference
        actor = _actor(query.from_user)
        action = callback_data.action
        if action in ("reject", "ask"):
            prompt = "staff.reason.prompt" if action == "reject" else "staff.question.prompt"
            await query.answer()
            assert isinstance(query.message, Message)
            asked = await query.message.reply(
                texts(prompt, reference=reference),
                reply_markup=ForceReply(selective=True),
            )
            await state.set_state(StaffInput.reason)
            await state.set_data(
                {"action": action, "reference": reference, "prompt": asked.message_id}
            )
            return
        try:
            if action == "take":
                view = await service.take(reference, actor)
            elif action == "approve":
                view = await service.approve(reference, actor)
            elif action == "complete":
                view = await service.complete(reference, actor)
            elif action == "evidence":
                view = await service.confirm_evidence(reference, actor)
            else:
                await query.answer()
                return
        except IllegalTransition:
            current = await service.get(reference)
            await query.answer(
                texts("staff.illegal", status=status_name(texts.language, current.status)),
                show_alert=True,
            )
            return
        except ConcurrentChange:
            await query.answer(texts("staff.stale"), show_alert=True)
            return
        except RequestNotFound:
            await query.answer(texts("staff.find.none", reference=reference), show_alert=True)
            return
        config.outbox_wake.set()
        await query.answer(
            texts(
                "staff.done",
                reference=reference,
                status=status_name(texts.language, view.status),
            )
        )

    @router.message(StateFilter(StaffInput.reason), F.text)
    async def reason_given(
        message: Message, state: FSMContext, texts: Texts, service: RequestService
    ) -> None:
        assert message.from_user is not None
        if not config.is_staff(message.from_user.id):
            return
        data = await state.get_data()
        prompt = data.get("prompt")
        if message.reply_to_message is not None and message.reply_to_message.message_id != prompt:
            return  # an answer to something else; keep waiting for the reason
        text = (message.text or "").strip()
        if not text:
            await message.reply(texts("staff.reply.empty"), reply_markup=ForceReply(selective=True))
            return
        reference = str(data["reference"])
        actor = _actor(message.from_user)
        await state.clear()
        try:
            if data.get("action") == "reject":
                view = await service.reject(reference, actor, text[:4000])
            else:
                view = await service.ask_info(reference, actor, text[:4000])
        except DomainError:
            current = await service.get(reference)
            await message.reply(
                texts("staff.illegal", status=status_name(texts.language, current.status))
            )
            return
        config.outbox_wake.set()
        await message.reply(
            texts(
                "staff.done",
                reference=reference,
                status=status_name(texts.language, view.status),
            )
        )

    def _staff_only(message: Message) -> bool:
        return message.from_user is not None and config.is_staff(message.from_user.id)

    @router.message(Command("queue"), _staff_only)
    async def queue(message: Message, texts: Texts, service: RequestService) -> None:
        views = await service.list_requests(open_only=True)
        await message.answer(_listing(views, texts, service, "staff.queue"))

    @router.message(Command("overdue"), _staff_only)
    async def overdue(message: Message, texts: Texts, service: RequestService) -> None:
        views = await service.list_requests(overdue=True)
        await message.answer(_listing(views, texts, service, "staff.overdue"))

    @router.message(Command("find"), _staff_only)
    async def find(
        message: Message, command: CommandObject, texts: Texts, service: RequestService
    ) -> None:
        reference = (command.args or "").strip().upper()
        if not reference:
            await message.answer(texts("staff.find.usage"))
            return
        try:
            card = await renderer.card(reference)
        except RequestNotFound:
            await message.answer(texts("staff.find.none", reference=html.escape(reference)))
            return
        await message.answer(card.text, reply_markup=card.reply_markup)

    @router.message(Command("stats"), _staff_only)
    async def stats(message: Message, texts: Texts, service: RequestService) -> None:
        now = clock.now()
        calendar = service.calendar
        today = calendar.local_date(now)
        week_end = today + timedelta(days=6 - today.weekday())
        views = await service.list_requests()
        open_views = [v for v in views if v.is_open]
        due_this_week = [
            v
            for v in open_views
            if v.due_at is not None and today <= calendar.local_date(v.due_at) <= week_end
        ]
        overdue_count = sum(1 for v in open_views if v.is_overdue(now))
        durations = [
            (v.closed_at - v.received_at).total_seconds() / 86400
            for v in views
            if v.closed_at is not None
        ]
        median = (
            texts("staff.stats.days", n=f"{statistics.median(durations):.1f}")
            if durations
            else texts("staff.stats.none")
        )
        await message.answer(
            texts(
                "staff.stats",
                open=len(open_views),
                week=len(due_this_week),
                overdue=overdue_count,
                median=median,
            )
        )

    return router


def _listing(views: list[RequestView], texts: Texts, service: RequestService, prefix: str) -> str:
    if not views:
        return texts(prefix + ".empty")
    lines = [texts(prefix + ".title")]
    for view in views[:LIST_LIMIT]:
        due = (
            format_date(texts.language, service.calendar.local_date(view.due_at))
            if view.due_at
            else texts("staff.no_due")
        )
        lines.append(
            texts(
                "staff.queue.line",
                reference=view.reference,
                kind=html.escape(kind_name(texts.language, view.kind)),
                status=html.escape(status_name(texts.language, view.status)),
                due=html.escape(due),
            )
        )
    if len(views) > LIST_LIMIT:
        lines.append(texts("staff.queue.more", n=len(views) - LIST_LIMIT))
    return "\n".join(lines)
