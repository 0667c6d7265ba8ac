"""Moving the dialog on: offer the kinds, ask what is still needed, show the summary, send a code.

The steps' handlers call these after taking an answer; what comes next is decided in
:mod:`workflows.requests.dialog_rules`, what is said is decided here.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram.fsm.context import FSMContext
from aiogram.types import Message

from bot.config import BotConfig
from bot.dialog import keyboards
from bot.dialog.states import Dialog
from bot.texts import Texts
from workflows.i18n import kind_name
from workflows.kinds import RequestKind
from workflows.privacy.masking import mask_email
from workflows.requests.dialog_rules import Step, next_step
from workflows.requests.limits import TooManyCodes
from workflows.requests.service import RequestService
from workflows.snapshots import Actor

# What the summary lists of the person's answers, in this order.
SUMMARY_FIELDS = (
    "correction",
    "full_name",
    "data_concerned",
    "phone",
    "email",
    "postal_address",
    "text",
)


async def offer_kinds(message: Message, state: FSMContext, texts: Texts) -> None:
    text, menu = keyboards.kinds_menu(texts)
    await state.set_state(Dialog.kind)
    await message.answer(text, reply_markup=menu)


async def tell_open_limit(message: Message, texts: Texts, service: RequestService) -> None:
    """Says the person has as many requests open as the desk takes at once."""
    await message.answer(texts("limits.too_many_open", limit=service.limits.max_open_requests))


async def ask_next(
    message: Message, state: FSMContext, texts: Texts, service: RequestService
) -> None:
    """Asks whatever the dialog still needs, or shows the summary when it has it all."""
    data = await state.get_data()
    spec = service.kinds[RequestKind(data["kind"])]
    queue: list[str] = data.get("queue", [])
    step = next_step(
        spec,
        questions_left=bool(queue),
        evidence_asked=bool(data.get("evidence_asked")),
        proven=bool(data.get("proof")),
    )
    if step is Step.FIELD:
        await state.set_state(Dialog.field)
        await message.answer(texts(spec.question(queue[0]) or ""))
    elif step is Step.EVIDENCE:
        await state.update_data(evidence_asked=True)
        await state.set_state(Dialog.evidence)
        await message.answer(texts("ask.evidence"), reply_markup=keyboards.evidence(texts, False))
    elif step is Step.IDENTITY:
        await state.set_state(Dialog.identity)
        await message.answer(texts("identity.ask"), reply_markup=keyboards.contact(texts))
    else:
        await state.set_state(Dialog.summary)
        await message.answer(summary(data, texts), reply_markup=keyboards.summary(texts))


def summary(data: dict[str, Any], texts: Texts) -> str:
    fields: dict[str, Any] = data.get("fields", {})
    lines = []
    for name in SUMMARY_FIELDS:
        value = fields.get(name)
        if value:
            lines.append(f"{texts('field.' + name)}: {html.escape(str(value))}")
    files = data.get("evidence", [])
    if files:
        lines.append(texts("field.attachments", count=len(files)))
    proof = data.get("proof") or {}
    if proof.get("method") == "email":
        identity = texts("identity.email", email=html.escape(mask_email(proof["email"])))
    else:
        identity = texts("identity.phone")
    details = "\n".join(lines) + ("\n" if lines else "")
    return texts(
        "summary",
        kind=html.escape(kind_name(texts.language, data["kind"])),
        details=details,
        identity=identity,
    )


async def ask_for_code(
    say: Callable[..., Awaitable[object]],
    state: FSMContext,
    texts: Texts,
    service: RequestService,
    config: BotConfig,
    reference: str,
    email: str,
    user_id: int,
) -> None:
    """E-mails a code for the filed request and waits for it; ``say`` tells the person."""
    await state.set_state(Dialog.code)
    await state.update_data(reference=reference, proof={"method": "email", "email": email})
    config.outbox_wake.set()
    try:
        await service.send_email_code(reference, Actor.person_telegram(user_id), email)
    except TooManyCodes as exc:
        # Filed, but the code must wait: the button asks for it again later.
        await say(
            texts("limits.codes", limit=exc.limit, minutes=exc.minutes),
            reply_markup=keyboards.new_code(texts, reference),
        )
        return
    config.outbox_wake.set()
    await say(texts("code.sent", email=html.escape(mask_email(email))))
