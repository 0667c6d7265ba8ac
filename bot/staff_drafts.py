"""Staff's words to a person (a reason, a question): a reply to the prompt, shown back first.

Reject and Ask for info on a card answer with a ForceReply prompt whose input
field says what to write; the prompt's message id is remembered in the staff
member's own FSM data (the key is per user in the group). Only a reply to that
prompt is taken: any other line in the group is left alone, for it may be a
command or a chat ("brb, getting coffee"), never the reason. The reply is
shown back with Send, Edit and Cancel: Send passes it to the request service,
which tells the person; Edit asks again; Cancel sends nothing. A draft belongs
to the staff member who wrote it and to its preview message: someone else's
press, or a press on an older preview, sends nothing.

The prompts for an approval's work (corrected values, fields to destroy) in
:mod:`bot.staff` are remembered and matched the same way (:func:`ask`,
:class:`PromptReply`).
"""

from __future__ import annotations

import html
from typing import Any

from aiogram import F, Router
from aiogram.filters import Filter
from aiogram.fsm.context import FSMContext
from aiogram.types import (
    CallbackQuery,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)

from bot.callbacks import DraftStep
from bot.config import BotConfig
from bot.texts import Texts
from workflows.errors import ConcurrentChange, DomainError
from workflows.i18n import status_name
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

PROMPTS = "staff_prompts"  # prompt message id -> what its reply is for
DRAFTS = "staff_drafts"  # preview message id -> the text waiting for Send
# Prompts and drafts one staff member may leave open at once; the oldest are forgotten.
KEPT = 10
# A reason or a question, with the preview's own words, stays within one Telegram message.
TEXT_LIMIT = 3500
# What each action's prompt, placeholder and preview are called in the catalogue.
WORDING = {"reject": "staff.reason", "ask": "staff.question"}


def _kept(entries: dict[str, Any]) -> dict[str, Any]:
    """The ``KEPT`` newest entries (message ids only grow)."""
    newest = sorted(entries, key=int)[-KEPT:]
    return {key: entries[key] for key in newest}


async def ask(
    reply_to: Message,
    state: FSMContext,
    text: str,
    placeholder: str,
    payload: dict[str, Any],
) -> Message:
    """Send a ForceReply prompt under ``reply_to`` and remember what its reply is for."""
    prompt = await reply_to.reply(
        text, reply_markup=ForceReply(selective=True, input_field_placeholder=placeholder)
    )
    await _remember(state, PROMPTS, str(prompt.message_id), payload)
    return prompt


async def forget_prompt(state: FSMContext, prompt_id: int) -> None:
    """The prompt has its answer: a second reply to it is nothing."""
    await _remember(state, PROMPTS, str(prompt_id), None)


async def _remember(state: FSMContext, kind: str, key: str, entry: dict[str, Any] | None) -> None:
    """Keep (or, with None, drop) one prompt or draft; nothing left leaves no record behind."""
    data = await state.get_data()
    entries = dict(data.get(kind) or {})
    if entry is None:
        entries.pop(key, None)
    else:
        entries[key] = entry
    if entries:
        data[kind] = _kept(entries)
    else:
        data.pop(kind, None)
    await state.set_data(data)


class PromptReply(Filter):
    """A staff member's reply to one of their own open prompts for one of ``actions``.

    Hands the handler ``prompt``: the payload remembered with it, and its ``id``.
    """

    def __init__(self, *actions: str) -> None:
        self.actions = frozenset(actions)

    async def __call__(self, message: Message, state: FSMContext) -> bool | dict[str, Any]:
        replied = message.reply_to_message
        if replied is None or message.text is None:
            return False
        prompts = (await state.get_data()).get(PROMPTS) or {}
        payload = prompts.get(str(replied.message_id))
        if not isinstance(payload, dict) or payload.get("action") not in self.actions:
            return False
        return {"prompt": {**payload, "id": replied.message_id}}


def setup(config: BotConfig) -> Router:
    """The router of staff's reasons and questions, in the staff group only."""
    router = Router(name=__name__)
    router.message.filter(F.chat.id == config.staff_chat_id)
    router.callback_query.filter(F.message.chat.id == config.staff_chat_id)
    router.message.register(words_given, PromptReply(*WORDING))
    router.callback_query.register(draft_pressed, DraftStep.filter())
    return router


async def ask_for_words(
    query: CallbackQuery, state: FSMContext, texts: Texts, action: str, reference: str
) -> None:
    """Reject or Ask for info pressed on a card: the prompt, as a reply to the card."""
    await query.answer()
    if not isinstance(query.message, Message):
        return
    wording = WORDING[action]
    await ask(
        query.message,
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
    message: Message,
    state: FSMContext,
    prompt: dict[str, Any],
    texts: Texts,
    config: BotConfig,
) -> None:
    """A reply to a reason's or a question's prompt: shown back with Send, Edit and Cancel."""
    if message.from_user is None or not config.is_staff(message.from_user.id):
        return
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
    await _remember(state, DRAFTS, str(preview.message_id), draft)


async def draft_pressed(
    query: CallbackQuery,
    callback_data: DraftStep,
    state: FSMContext,
    texts: Texts,
    service: RequestService,
    config: BotConfig,
) -> None:
    """Send, Edit or Cancel under a preview: only its author's, and only the latest."""
    if not config.is_staff(query.from_user.id):
        await query.answer(texts("staff.not_allowed"), show_alert=True)
        return
    preview = query.message
    key = str(preview.message_id) if preview is not None else ""
    draft = ((await state.get_data()).get(DRAFTS) or {}).get(key)
    if not isinstance(draft, dict) or draft.get("reference") != callback_data.reference:
        await query.answer(texts("staff.draft.gone"), show_alert=True)
        return
    action, reference = str(draft["action"]), str(draft["reference"])
    step = callback_data.action
    outcome: str | None = None
    if step == "send":
        outcome = await _send(query, action, reference, str(draft["text"]), texts, service)
        if outcome is None:
            return  # someone changed the request meanwhile: the draft waits for a new press
        config.outbox_wake.set()
    elif step == "cancel":
        await query.answer()
        outcome = texts("staff.draft.cancelled", reference=reference)
    elif step == "edit":
        await query.answer()
    else:
        await query.answer()
        return
    await _remember(state, DRAFTS, key, None)
    if not isinstance(preview, Message):
        return
    await preview.edit_reply_markup(reply_markup=None)
    if outcome is not None:
        await preview.reply(outcome)
        return
    wording = WORDING[action]
    await ask(
        preview,
        state,
        texts(f"{wording}.prompt", reference=reference),
        texts(f"{wording}.placeholder"),
        {"action": action, "reference": reference},
    )


async def _send(
    query: CallbackQuery,
    action: str,
    reference: str,
    text: str,
    texts: Texts,
    service: RequestService,
) -> str | None:
    """Pass the words on; what to tell staff, or None when the press should be tried again."""
    actor = Actor.staff(query.from_user.id, query.from_user.full_name)
    try:
        if action == "reject":
            view = await service.reject(reference, actor, text)
        else:
            view = await service.ask_info(reference, actor, text)
    except ConcurrentChange:
        await query.answer(html.unescape(texts("staff.stale")), show_alert=True)
        return None
    except DomainError:
        # Closed or moved on meanwhile: the words cannot go, and the draft goes.
        current = await service.get(reference)
        refusal = texts("staff.illegal", status=status_name(texts.language, current.status))
        await query.answer(html.unescape(refusal), show_alert=True)
        return refusal
    await query.answer()
    return texts("staff.done", reference=reference, status=status_name(texts.language, view.status))
