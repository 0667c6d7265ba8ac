"""The staff group: the card's buttons, an approval's work by ForceReply, and the queue commands.

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
from typing import Any

from aiogram import F, Router
from aiogram.filters import Command, CommandObject
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message, User

from bot.callbacks import StaffAction
from bot.cards import OutboxRenderer
from bot.config import BotConfig
from bot.staff_drafts import WORDING, PromptReply, ask, ask_for_words, forget_prompt
from bot.texts import Texts
from workflows.clock import Clock
from workflows.directory.customer_directory import DIRECTORY_FIELDS
from workflows.errors import (
    ConcurrentChange,
    DomainError,
    IllegalTransition,
    KindUndecided,
    NotAllowed,
    OwnRequest,
    RequestNotFound,
)
from workflows.fulfilment.corrections import parse_field_names
from workflows.fulfilment.failures import FulfilmentError, FulfilmentFailed
from workflows.fulfilment.work import Fulfilment
from workflows.i18n import format_date, kind_name, status_name
from workflows.kinds import STAFF_INPUTS, RequestKind
from workflows.requests.service import RequestService
from workflows.requests.states import Action, Status, next_status
from workflows.snapshots import Actor, RequestView

log = logging.getLogger(__name__)
LIST_LIMIT = 30

# Telegram shows at most 200 characters in a button's alert.
ALERT_LIMIT = 200


def _actor(user: User) -> Actor:
    return Actor.staff(user.id, user.full_name)


def _alert(text: str) -> str:
    return text if len(text) <= ALERT_LIMIT else text[: ALERT_LIMIT - 1] + "…"


def _waiting(view: RequestView) -> bool:
    """Approvals are recorded, but not enough yet for the work to be done."""
    return bool(view.approvals) and view.status not in (
        Status.APPROVED.value,
        Status.COMPLETED.value,
    )


def _outcome(texts: Texts, view: RequestView) -> str:
    if _waiting(view):
        return texts(
            "staff.approval.recorded",
            reference=view.reference,
            names=html.escape(", ".join(view.approvals)),
        )
    return texts(
        "staff.done", reference=view.reference, status=status_name(texts.language, view.status)
    )


async def _refusal(
    exc: DomainError, texts: Texts, service: RequestService, reference: str, step: str
) -> str:
    """Why nothing changed, in the staff's words (the core's reasons name no personal data)."""
    if isinstance(exc, IllegalTransition):
        current = await service.get(reference)
        return texts("staff.illegal", status=status_name(texts.language, current.status))
    if isinstance(exc, ConcurrentChange):
        return texts("staff.stale")
    if isinstance(exc, RequestNotFound):
        return texts("staff.find.none", reference=html.escape(reference))
    if isinstance(exc, KindUndecided):
        return texts("staff.kind.first")
    if isinstance(exc, OwnRequest):
        return texts("staff.approval.own")
    if isinstance(exc, NotAllowed) and step == "approve":
        return texts("staff.approval.twice")
    if isinstance(exc, FulfilmentFailed):
        # Approved, not done: the group has the alert; Complete tries the work again.
        return texts("staff.work.not_done", reason=html.escape(str(exc)))
    return texts("staff.work.failed", reason=html.escape(str(exc)))


async def _complete(
    fulfilment: Fulfilment, service: RequestService, reference: str, actor: Actor
) -> RequestView:
    """Complete an approved request: the work its approvals agreed to, nothing typed now."""
    current = await service.get(reference)
    if current.kind == RequestKind.UNCLASSIFIED.value:
        raise KindUndecided(reference)
    next_status(Status(current.status), Action.COMPLETE)
    return await fulfilment.fulfil(current, actor)


async def pressed(
    query: CallbackQuery,
    callback_data: StaffAction,
    state: FSMContext,
    texts: Texts,
    config: BotConfig,
    service: RequestService,
    fulfilment: Fulfilment,
) -> None:
    """A button of a request's card."""
    if not config.is_staff(query.from_user.id):
        await query.answer(texts("staff.not_allowed"), show_alert=True)
        return
    reference = callback_data.reference
    actor = _actor(query.from_user)
    action = callback_data.action
    if action in WORDING:
        await ask_for_words(query, state, texts, action, reference)
        return
    try:
        if action == "approve":
            # Refused before anything is asked: nobody types values only to be told no.
            await service.may_approve(reference, actor)
            spec = service.kinds.get(RequestKind((await service.get(reference)).kind))
            needs = spec.staff_input if spec is not None else None
            if needs is not None:
                await query.answer()
                if isinstance(query.message, Message):
                    fields = ", ".join(sorted(DIRECTORY_FIELDS))
                    await ask(
                        query.message,
                        state,
                        texts(f"staff.{needs}.prompt", reference=reference, fields=fields),
                        texts(f"staff.{needs}.placeholder"),
                        {"action": needs, "reference": reference},
                    )
                return
            view = await fulfilment.approve(reference, actor)
        elif action == "complete":
            view = await _complete(fulfilment, service, reference, actor)
        elif action == "take":
            view = await service.take(reference, actor)
        elif action == "evidence":
            view = await service.confirm_evidence(reference, actor)
        else:
            await query.answer()
            return
    except DomainError as exc:
        refusal = await _refusal(exc, texts, service, reference, action)
        await query.answer(_alert(html.unescape(refusal)), show_alert=True)
        return
    config.outbox_wake.set()
    outcome = _outcome(texts, view)
    await query.answer(_alert(html.unescape(outcome)), show_alert=_waiting(view))


async def work_given(
    message: Message,
    state: FSMContext,
    prompt: dict[str, Any],
    texts: Texts,
    config: BotConfig,
    service: RequestService,
    fulfilment: Fulfilment,
) -> None:
    """A reply to an approval's prompt: the corrected values, or the fields to destroy."""
    if message.from_user is None or not config.is_staff(message.from_user.id):
        return
    action, reference = str(prompt["action"]), str(prompt["reference"])
    await forget_prompt(state, int(prompt["id"]))
    text = (message.text or "").strip()
    try:
        if not text:
            raise FulfilmentError("the reply is empty")
        corrections = fulfilment.parse_corrections(text) if action == "correct" else None
        fields = parse_field_names(text) if action == "destroy" else None
    except FulfilmentError as exc:
        # Nothing changes; the same question is asked again for a corrected answer.
        await ask(
            message,
            state,
            texts("staff.input.bad", reason=html.escape(str(exc))),
            texts(f"staff.{action}.placeholder"),
            {"action": action, "reference": reference},
        )
        return
    actor = _actor(message.from_user)
    try:
        view = await fulfilment.approve(reference, actor, corrections=corrections, fields=fields)
    except DomainError as exc:
        await message.reply(await _refusal(exc, texts, service, reference, "approve"))
        return
    config.outbox_wake.set()
    await message.reply(_outcome(texts, view))


def setup(config: BotConfig, renderer: OutboxRenderer, clock: Clock) -> Router:
    router = Router(name=__name__)
    router.message.filter(F.chat.id == config.staff_chat_id)
    router.callback_query.filter(F.message.chat.id == config.staff_chat_id)
    router.callback_query.register(pressed, StaffAction.filter())
    router.message.register(work_given, PromptReply(*STAFF_INPUTS))

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
