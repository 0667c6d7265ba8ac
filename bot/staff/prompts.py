"""A staff member's open ForceReply prompts and drafts, kept in their own FSM data.

A prompt's message id is remembered with what its reply is for (the key of the
FSM data is per user in the group), so only a reply to that prompt is taken:
any other line in the group may be a command or a chat, never the answer.
:class:`PromptReply` is the filter that knows such a reply. A draft (a reason
or a question shown back before it goes) is remembered by its preview's id.
"""

from __future__ import annotations

from typing import Any

from aiogram.filters import Filter
from aiogram.fsm.context import FSMContext
from aiogram.types import ForceReply, Message

PROMPTS = "staff_prompts"  # prompt message id -> what its reply is for
DRAFTS = "staff_drafts"  # preview message id -> the text waiting for Send
# Prompts and drafts one staff member may leave open at once; the oldest are forgotten.
KEPT = 10


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
    await remember(state, PROMPTS, str(prompt.message_id), payload)
    return prompt


async def forget_prompt(state: FSMContext, prompt_id: int) -> None:
    """The prompt has its answer: a second reply to it is nothing."""
    await remember(state, PROMPTS, str(prompt_id), None)


async def remember(state: FSMContext, kind: str, key: str, entry: dict[str, Any] | None) -> None:
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


async def draft_of(state: FSMContext, key: str) -> dict[str, Any] | None:
    """The draft remembered with the preview whose message id is ``key``, if any."""
    draft = ((await state.get_data()).get(DRAFTS) or {}).get(key)
    return draft if isinstance(draft, dict) else None


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
