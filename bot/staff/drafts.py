"""Staff's words to a person (a reason, a question, a complaint's answer), shown back first.

Reject and Ask for info on a card answer with a ForceReply prompt whose input
field says what to write (:mod:`bot.staff.prompts` remembers it per staff
member); so do Approve and Complete on a complaint, which is closed only with
the answer staff write (:func:`ask_for_answer`). Only a reply to that prompt
is taken: any other line in the group is left alone, for it may be a command
or a chat ("brb, getting coffee"), never the reason. The reply is shown back
with Send, Edit and Cancel: Send passes it to the request service, which tells
the person (an answer approves the complaint, which closes it); Edit asks
again; Cancel sends nothing. A draft belongs to the staff member who wrote it
and to its preview message: someone else's press, or a press on an older
preview, sends nothing.
"""

from __future__ import annotations

import html
from typing import Any

from aiogram import F, Router
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.callbacks import DraftStep, StaffAction
from bot.config import BotConfig
from bot.staff.answers import actor, alert, outcome, refusal
from bot.staff.prompts import DRAFTS, PromptReply, ask, draft_of, forget_prompt, remember
from bot.texts import Texts
from workflows.errors import ConcurrentChange, DomainError
from workflows.fulfilment.work import Fulfilment
from workflows.requests.service import RequestService
from workflows.requests.states import Status
from workflows.snapshots import Actor, RequestView

# A reason or a question, with the preview's own words, stays within one Telegram message.
TEXT_LIMIT = 3500
# What each action's prompt, placeholder and preview are called in the catalogue.
WORDING = {"reject": "staff.reason", "ask": "staff.question", "answer": "staff.answer"}


async def reject(
    query: CallbackQuery, callback_data: StaffAction, state: FSMContext, texts: Texts
) -> None:
    """Reject pressed on a card: the prompt for the reason, as a reply to the card."""
    await _ask_for_words(query, state, texts, "reject", callback_data.reference)


async def ask_info(
    query: CallbackQuery, callback_data: StaffAction, state: FSMContext, texts: Texts
) -> None:
    """Ask for info pressed on a card: the prompt for the question, as a reply to the card."""
    await _ask_for_words(query, state, texts, "ask", callback_data.reference)


async def ask_for_answer(
    reply_to: Message, state: FSMContext, texts: Texts, reference: str
) -> None:
    """The prompt for a complaint's answer, as a reply to its card (Approve or Complete pressed)."""
    await _prompt(reply_to, state, texts, "answer", reference)


async def _ask_for_words(
    query: CallbackQuery, state: FSMContext, texts: Texts, action: str, reference: str
) -> None:
    await query.answer()
    if isinstance(query.message, Message):
        await _prompt(query.message, state, texts, action, reference)


async def _prompt(
    reply_to: Message, state: FSMContext, texts: Texts, action: str, reference: str
) -> None:
    wording = WORDING[action]
    await ask(
        reply_to,
        state,
        texts(f"{wording}.prompt", reference=reference),
        texts(f"{wording}.placeholder"),
        {"action": action, "reference": reference},
    )


def draft_keyboard(texts: Texts, reference: str) -> InlineKeyboardMarkup:
    def step(action: str) -> InlineKeyboardButton:
        return InlineKeyboardButton(
            text=texts(f"staff.draft.{action}"),
            callback_data=DraftStep(action=action, reference=reference).pack(),
        )

    return InlineKeyboardMarkup(inline_keyboard=[[step("send"), step("edit"), step("cancel")]])


async def words_given(
    message: Message, state: FSMContext, prompt: dict[str, Any], texts: Texts
) -> None:
    """A reply to a reason's or a question's prompt: shown back with Send, Edit and Cancel."""
    action, reference = str(prompt["action"]), str(prompt["reference"])
    wording = WORDING[action]
    text = (message.text or "").strip()
    problem = None
    if not text:
        problem = texts("staff.reply.empty")
    elif len(text) > TEXT_LIMIT:
        problem = texts("staff.reply.long", limit=TEXT_LIMIT)
    await forget_prompt(state, int(prompt["id"]))
    if problem is not None:
        payload = {"action": action, "reference": reference}
        await ask(message, state, problem, texts(f"{wording}.placeholder"), payload)
        return
    preview = await message.reply(
        texts(f"{wording}.preview", reference=reference, text=html.escape(text)),
        reply_markup=draft_keyboard(texts, reference),
    )
    draft = {"action": action, "reference": reference, "text": text}
    await remember(state, DRAFTS, str(preview.message_id), draft)


def _key(query: CallbackQuery) -> str:
    """The key of the draft shown in the pressed preview."""
    return str(query.message.message_id) if query.message is not None else ""


async def _draft(
    query: CallbackQuery, callback_data: DraftStep, state: FSMContext, texts: Texts
) -> dict[str, Any] | None:
    """The presser's own draft under this preview; else they are told it is gone."""
    draft = await draft_of(state, _key(query))
    if draft is None or draft.get("reference") != callback_data.reference:
        await query.answer(texts("staff.draft.gone"), show_alert=True)
        return None
    return draft


async def send(
    query: CallbackQuery,
    callback_data: DraftStep,
    state: FSMContext,
    texts: Texts,
    service: RequestService,
    config: BotConfig,
    fulfilment: Fulfilment,
) -> None:
    """Send: the words go to the person, through the request service."""
    draft = await _draft(query, callback_data, state, texts)
    if draft is None:
        return
    action, reference = str(draft["action"]), str(draft["reference"])
    said = await _send(query, action, reference, str(draft["text"]), texts, service, fulfilment)
    if said is None:
        return  # someone changed the request meanwhile: the draft waits for a new press
    config.outbox_wake.set()
    preview = await _close(query, state)
    if preview is not None:
        await preview.reply(said)


async def cancel(
    query: CallbackQuery, callback_data: DraftStep, state: FSMContext, texts: Texts
) -> None:
    """Cancel: nothing is sent, and the preview says so."""
    draft = await _draft(query, callback_data, state, texts)
    if draft is None:
        return
    await query.answer()
    preview = await _close(query, state)
    if preview is not None:
        await preview.reply(texts("staff.draft.cancelled", reference=str(draft["reference"])))


async def edit(
    query: CallbackQuery, callback_data: DraftStep, state: FSMContext, texts: Texts
) -> None:
    """Edit: the same prompt again, for new words."""
    draft = await _draft(query, callback_data, state, texts)
    if draft is None:
        return
    await query.answer()
    preview = await _close(query, state)
    if preview is not None:
        await _prompt(preview, state, texts, str(draft["action"]), str(draft["reference"]))


async def unknown_step(
    query: CallbackQuery, callback_data: DraftStep, state: FSMContext, texts: Texts
) -> None:
    """A step no handler knows, under a live draft: the spinner stops, the draft stays."""
    if await _draft(query, callback_data, state, texts) is not None:
        await query.answer()


async def _close(query: CallbackQuery, state: FSMContext) -> Message | None:
    """Forget the draft and take the buttons off its preview; the preview, if it can be used."""
    await remember(state, DRAFTS, _key(query), None)
    if not isinstance(query.message, Message):
        return None
    await query.message.edit_reply_markup(reply_markup=None)
    return query.message


async def _send(
    query: CallbackQuery,
    action: str,
    reference: str,
    text: str,
    texts: Texts,
    service: RequestService,
    fulfilment: Fulfilment,
) -> str | None:
    """Pass the words on; what to tell staff, or None when the press should be tried again."""
    staff = actor(query.from_user)
    try:
        view = await _pass_on(action, reference, staff, text, service, fulfilment)
    except ConcurrentChange:
        await query.answer(alert(texts("staff.stale")), show_alert=True)
        return None
    except DomainError as exc:
        # Closed or moved on meanwhile, or refused: the words cannot go, and the draft goes.
        step = "approve" if action == "answer" else action
        reason = await refusal(exc, texts, service, reference, step)
        await query.answer(alert(reason), show_alert=True)
        return reason
    await query.answer()
    return outcome(texts, view)


async def _pass_on(
    action: str,
    reference: str,
    staff: Actor,
    text: str,
    service: RequestService,
    fulfilment: Fulfilment,
) -> RequestView:
    if action == "reject":
        return await service.reject(reference, staff, text)
    if action == "ask":
        return await service.ask_info(reference, staff, text)
    # A complaint's answer: approving it with the answer closes it; one approved without
    # an answer (before answers were asked for) is completed with this one.
    current = await service.get(reference)
    if current.status == Status.APPROVED.value:
        return await fulfilment.fulfil(current, staff, answer=text)
    return await fulfilment.approve(reference, staff, answer=text)


def router() -> Router:
    """Reject's, Ask for info's and the answers' router: the buttons, the replies, the steps."""
    drafts = Router(name=__name__)
    drafts.callback_query.register(reject, StaffAction.filter(F.action == "reject"))
    drafts.callback_query.register(ask_info, StaffAction.filter(F.action == "ask"))
    drafts.message.register(words_given, PromptReply(*WORDING))
    drafts.callback_query.register(send, DraftStep.filter(F.action == "send"))
    drafts.callback_query.register(edit, DraftStep.filter(F.action == "edit"))
    drafts.callback_query.register(cancel, DraftStep.filter(F.action == "cancel"))
    drafts.callback_query.register(unknown_step, DraftStep.filter())
    return drafts
