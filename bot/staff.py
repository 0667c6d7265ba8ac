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
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

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
from workflows.errors import (
    ConcurrentChange,
    DomainError,
    IllegalTransition,
    KindUndecided,
    NotAllowed,
    RequestNotFound,
)
from workflows.fulfilment import (
    DIRECTORY_FIELDS,
    Fulfilment,
    FulfilmentError,
    FulfilmentFailed,
    parse_field_names,
)
from workflows.i18n import format_date, kind_name, status_name
from workflows.kinds import RequestKind
from workflows.service import RequestService
from workflows.states import Action, Status, next_status
from workflows.views import Actor, RequestView

log = logging.getLogger(__name__)
LIST_LIMIT = 30


class StaffInput(StatesGroup):
    reason = State()


# Kinds whose work needs words from staff before it is done: corrected values, or field names.
INPUT_BY_KIND = {
    RequestKind.RECTIFY.value: "correct",
    RequestKind.DESTROY_UNLAWFUL.value: "destroy",
}
# Telegram shows at most 200 characters in a button's alert.
ALERT_LIMIT = 200


def _actor(user: User) -> Actor:
    return Actor.staff(user.id, user.full_name)


def _alert(text: str) -> str:
    return text if len(text) <= ALERT_LIMIT else text[: ALERT_LIMIT - 1] + "…"


async def _work(
    fulfilment: Fulfilment,
    service: RequestService,
    step: str,
    reference: str,
    actor: Actor,
    corrections: Mapping[str, str] | None = None,
    fields: Sequence[str] | None = None,
) -> RequestView:
    """Approve (the work follows once approvals suffice), or do the work of an approved request."""
    if step == "approve":
        return await fulfilment.approve(reference, actor, corrections=corrections, fields=fields)
    view = await service.get(reference)
    return await fulfilment.fulfil(view, actor, corrections=corrections, fields=fields)


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
    if isinstance(exc, NotAllowed) and step == "approve":
        return texts("staff.approval.twice")
    if isinstance(exc, FulfilmentFailed):
        # Approved, not done: the group has the alert; Complete tries the work again.
        return texts("staff.work.not_done", reason=html.escape(str(exc)))
    return texts("staff.work.failed", reason=html.escape(str(exc)))


def _approved_by(view: RequestView, user_id: int) -> bool:
    """This staff member's approval is already recorded and waits for another's."""
    return bool(view.approvals) and any(
        event.action == "approval" and event.actor_id == str(user_id) for event in view.events
    )


def setup(config: BotConfig, renderer: OutboxRenderer, clock: Clock) -> Router:
    router = Router(name=__name__)
    router.message.filter(F.chat.id == config.staff_chat_id)
    router.callback_query.filter(F.message.chat.id == config.staff_chat_id)

    async def ask(query: CallbackQuery, state: FSMContext, text: str, data: dict[str, Any]) -> None:
        await query.answer()
        assert isinstance(query.message, Message)
        asked = await query.message.reply(text, reply_markup=ForceReply(selective=True))
        await state.set_state(StaffInput.reason)
        await state.set_data({**data, "prompt": asked.message_id})

    @router.callback_query(StaffAction.filter())
    async def pressed(
        query: CallbackQuery,
        callback_data: StaffAction,
        state: FSMContext,
        texts: Texts,
        service: RequestService,
        fulfilment: Fulfilment,
    ) -> None:
        if not config.is_staff(query.from_user.id):
            await query.answer(texts("staff.not_allowed"), show_alert=True)
            return
        reference = callback_data.reference
        actor = _actor(query.from_user)
        action = callback_data.action
        if action in ("reject", "ask"):
            prompt = "staff.reason.prompt" if action == "reject" else "staff.question.prompt"
            await ask(
                query,
                state,
                texts(prompt, reference=reference),
                {"action": action, "reference": reference},
            )
            return
        try:
            if action in ("approve", "complete"):
                current = await service.get(reference, with_events=True)
                if current.kind == RequestKind.UNCLASSIFIED.value:
                    raise KindUndecided(reference)
                step = Action.APPROVE if action == "approve" else Action.COMPLETE
                next_status(Status(current.status), step)
                needs = INPUT_BY_KIND.get(current.kind)
                if needs is not None:
                    if action == "approve" and _approved_by(current, query.from_user.id):
                        raise NotAllowed("the same staff member approved already")
                    fields = ", ".join(sorted(DIRECTORY_FIELDS))
                    await ask(
                        query,
                        state,
                        texts(f"staff.{needs}.prompt", reference=reference, fields=fields),
                        {"action": needs, "then": action, "reference": reference},
                    )
                    return
                view = await _work(fulfilment, service, action, reference, actor)
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

    @router.message(StateFilter(StaffInput.reason), F.text)
    async def reason_given(
        message: Message,
        state: FSMContext,
        texts: Texts,
        service: RequestService,
        fulfilment: Fulfilment,
    ) -> None:
        assert message.from_user is not None
        if not config.is_staff(message.from_user.id):
            return
        data = await state.get_data()
        prompts = {data.get("prompt"), *data.get("earlier", ())}
        if (
            message.reply_to_message is not None
            and message.reply_to_message.message_id not in prompts
        ):
            return  # an answer to something else; keep waiting for the reason
        text = (message.text or "").strip()
        if not text:
            await message.reply(texts("staff.reply.empty"), reply_markup=ForceReply(selective=True))
            return
        reference = str(data["reference"])
        actor = _actor(message.from_user)
        action = data.get("action")
        if action in ("correct", "destroy"):
            try:
                corrections = fulfilment.parse_corrections(text) if action == "correct" else None
                fields = parse_field_names(text) if action == "destroy" else None
            except FulfilmentError as exc:
                # Nothing changes; the same question stays open for a corrected answer.
                again = await message.reply(
                    texts("staff.input.bad", reason=html.escape(str(exc))),
                    reply_markup=ForceReply(selective=True),
                )
                earlier = [p for p in prompts if p is not None]
                await state.update_data(prompt=again.message_id, earlier=earlier)
                return
            await state.clear()
            step = str(data.get("then") or "approve")
            try:
                view = await _work(fulfilment, service, step, reference, actor, corrections, fields)
            except DomainError as exc:
                await message.reply(await _refusal(exc, texts, service, reference, step))
                return
            config.outbox_wake.set()
            await message.reply(_outcome(texts, view))
            return
        await state.clear()
        try:
            if action == "reject":
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
