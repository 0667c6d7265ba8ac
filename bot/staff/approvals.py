"""Approve on a card, and an approval's work given by a reply to a ForceReply prompt.

A kind whose work needs words from staff (the corrected values, or the fields
to destroy) is asked for them first, and only after the core's pre-check says
this staff member may approve at all; the reply is the approval. A complaint's
answer is words to the person: it is shown back first (:mod:`bot.staff.drafts`).
"""

from __future__ import annotations

import html
from typing import Any

from aiogram import F, Router
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from bot.callbacks import StaffAction
from bot.config import BotConfig
from bot.staff.answers import actor, done, outcome, refusal, refused
from bot.staff.drafts import WORDING, ask_for_answer
from bot.staff.prompts import PromptReply, ask, forget_prompt
from bot.texts import Texts
from workflows.directory.customer_directory import DIRECTORY_FIELDS
from workflows.errors import DomainError
from workflows.fulfilment.corrections import parse_field_names
from workflows.fulfilment.failures import FulfilmentError
from workflows.fulfilment.work import Fulfilment
from workflows.kinds import STAFF_INPUTS, RequestKind
from workflows.requests.service import RequestService
from workflows.requests.staff_view import approvable


async def approve(
    query: CallbackQuery,
    callback_data: StaffAction,
    state: FSMContext,
    texts: Texts,
    config: BotConfig,
    service: RequestService,
    fulfilment: Fulfilment,
) -> None:
    """Approve: at once, or first the prompt for the work the kind needs."""
    reference = callback_data.reference
    staff = actor(query.from_user)
    try:
        # Refused before anything is asked: nobody types values only to be told no.
        current = await approvable(service, reference, staff)
    except DomainError as exc:
        await refused(query, exc, texts, service, reference, "approve")
        return
    # Kinds whose work needs words from staff first: corrected values, or field names.
    spec = service.kinds.get(RequestKind(current.kind))
    needs = spec.staff_input if spec is not None else None
    if needs in WORDING:  # words to the person (a complaint's answer): shown back first
        await query.answer()
        if isinstance(query.message, Message):
            await ask_for_answer(query.message, state, texts, reference)
        return
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
    try:
        view = await fulfilment.approve(reference, staff)
    except DomainError as exc:
        await refused(query, exc, texts, service, reference, "approve")
        return
    await done(query, texts, config, view)


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
    assert message.from_user is not None  # the staff routers hear members only
    try:
        view = await fulfilment.approve(
            reference, actor(message.from_user), corrections=corrections, fields=fields
        )
    except DomainError as exc:
        await message.reply(await refusal(exc, texts, service, reference, "approve"))
        return
    config.outbox_wake.set()
    await message.reply(outcome(texts, view))


def router() -> Router:
    """Approve's router: the button, and the replies to its prompts."""
    approvals = Router(name=__name__)
    approvals.callback_query.register(approve, StaffAction.filter(F.action == "approve"))
    checked = [name for name in STAFF_INPUTS if name not in WORDING]  # the rest are drafts
    approvals.message.register(work_given, PromptReply(*checked))
    return approvals
